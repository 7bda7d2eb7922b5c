"""The allow-list of the ``.skops`` format: which types a file may make :mod:`skops.io` build.

Only *classes* defined in the modules of :data:`SKOPS_ALLOWED_MODULES` (our estimators,
scikit-learn classes), and of NumPy only scalar and dtype classes; a file needing any
other type is refused before anything is built. skops never runs pickled code, and the
Keras encoder inside a fitted embedder is stored as ``.keras`` bytes, loaded in Keras's
safe mode. This module never imports TensorFlow.
"""

from __future__ import annotations

import importlib

import numpy as np

from embedder.checks import few, summary

#: Modules whose *classes* a ``.skops`` file may instantiate (besides skops's defaults).
SKOPS_ALLOWED_MODULES = ("sklearn.", "embedder.", "classifiers.", "numpy.", "scipy.sparse.")


def _resolve_allowed(name):
    """Whether the type ``name`` (``module.Class``) may be built from a ``.skops`` file.

    Only *classes* defined in an allow-listed module (checked on the class itself, so a
    name reaching another module's class through an import is refused), and of NumPy
    only scalar and dtype classes: functions could be called with the file's arguments.
    """
    module_name, _, attr = name.rpartition(".")
    if not module_name or not name.startswith(SKOPS_ALLOWED_MODULES):
        return False
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return False
    if not isinstance(obj, type) or f"{obj.__module__}.{obj.__qualname__}" != name:
        return False
    return not name.startswith("numpy.") or issubclass(obj, np.generic | np.dtype)


def skops_allowed_types(data):
    """Split the non-default types a ``.skops`` payload needs into allowed and refused.

    Parameters
    ----------
    data : bytes
        The content of a ``.skops`` file.

    Returns
    -------
    allowed : list of str
        Types to pass to ``skops.io.loads(..., trusted=allowed)``.
    refused : list of str
        Types outside the allow-list (:data:`SKOPS_ALLOWED_MODULES`).
    """
    import skops.io

    needed = skops.io.get_untrusted_types(data=data)
    allowed = [name for name in needed if _resolve_allowed(name)]
    return allowed, sorted(set(needed) - set(allowed))


def skops_trusted_types(path, data):
    """The allow-listed types ``data`` needs; a ValueError if it needs any other."""
    try:
        allowed, refused = skops_allowed_types(data)
    except Exception as exc:  # zip/JSON errors of a corrupt file
        raise ValueError(
            f"cannot read pipeline file {path} (truncated or not a .skops file?): "
            f"{summary(f'{type(exc).__name__}: {exc}', 120)}"
        ) from exc
    if refused:
        raise ValueError(
            f"refusing to load {path}: it needs types outside the allow-list of "
            f"{', '.join(SKOPS_ALLOWED_MODULES)} classes: {few(refused)}"
        )
    return allowed
