"""Save and load fitted pipelines: ``.joblib`` (pickle) or ``.skops`` (safe), plus a sidecar.

Two formats, chosen by the file suffix:

``.skops``
    Written with :mod:`skops.io`. Loading builds only allow-listed types (our
    estimators, scikit-learn classes, NumPy scalar types; :func:`skops_allowed_types`)
    and never runs pickled code; the Keras encoder inside a fitted embedder is stored as
    ``.keras`` bytes and loaded in Keras's safe mode (no lambdas). **Use it for files
    from anyone you do not trust.**

any other suffix (``.joblib``)
    A plain ``joblib.dump``, so ``joblib.load`` reads it too. **Unpickling runs code
    chosen by whoever wrote the file**: never load a ``.joblib`` file from an untrusted
    source. :func:`load_pipeline` refuses to unpickle bytes it has not verified against
    the sidecar (or, with ``TRIPLET_SIGNING_KEY`` set, against an HMAC signature).

Both get a JSON sidecar ``<file>.json``: format version, library versions, the sha256
of the model file (and its HMAC-SHA256 under the key in the environment variable
:data:`SIGNING_KEY_ENV`, when set), classes, step names and classes, and the
parameters of the ``"embed"`` step. Files are written atomically (:mod:`embedder.files`),
the model first, then the sidecar naming the model's digest: a reader never pairs a
model with a sidecar that does not describe it. This module never imports TensorFlow
(versions come from the package metadata), so a head saved on embeddings loads
without it.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import importlib.metadata
import io
import json
import os
import platform
import warnings
from datetime import datetime, timezone
from pathlib import Path

import joblib
import numpy as np
import sklearn
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from embedder.checks import few
from embedder.files import atomic_write_bytes, atomic_write_text
from pipelines._text import jsonable

FORMAT_VERSION = 1
#: Environment variable holding the key that signs (HMAC-SHA256) and verifies files.
SIGNING_KEY_ENV = "TRIPLET_SIGNING_KEY"
SKOPS_SUFFIX = ".skops"
#: Modules whose *classes* a ``.skops`` file may instantiate (besides skops's defaults).
SKOPS_ALLOWED_MODULES = ("sklearn.", "embedder.", "classifiers.", "numpy.", "scipy.sparse.")
_PACKAGE = "triplet-embeddings"
_LIBRARIES = ("tensorflow", "keras", "scikit-learn", "numpy", "joblib", "skops")


def sidecar_path(path):
    """The JSON sidecar of ``path``: the same name with ``.json`` appended."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _version(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _qualname(obj):
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _signing_key():
    key = os.environ.get(SIGNING_KEY_ENV)
    return key.encode("utf-8") if key else None


def _signature(key, data):
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _metadata(pipeline, data):
    steps = getattr(pipeline, "steps", None)
    steps = steps if isinstance(steps, list) else []
    embed = dict(steps).get("embed")
    embed_params = None
    if embed is not None and hasattr(embed, "get_params"):
        embed_params = jsonable(embed.get_params(deep=False))
    metadata = {
        "format_version": FORMAT_VERSION,
        _PACKAGE: _version(_PACKAGE) or "unknown",
        "versions": {name: _version(name) for name in _LIBRARIES},
        "python": platform.python_version(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "estimator": _qualname(pipeline),
        "classes": jsonable(getattr(pipeline, "classes_", None)),
        "steps": [{"name": name, "class": _qualname(step)} for name, step in steps],
        "embed_params": embed_params,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    key = _signing_key()
    if key is not None:
        metadata["hmac"] = _signature(key, data)
    return metadata


def _check_savable(pipeline, path):
    if not callable(getattr(pipeline, "fit", None)) or isinstance(pipeline, type):
        raise TypeError(
            f"pipeline must be a fitted scikit-learn estimator instance, got {pipeline!r}"
        )
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    try:
        check_is_fitted(pipeline)
    except NotFittedError as exc:
        raise ValueError(
            f"pipeline {type(pipeline).__name__} is not fitted: call fit before "
            f"save_pipeline (nothing was written to {os.fspath(path)})"
        ) from exc


def _dumps(pipeline, path):
    """The model file's bytes, in the format ``path``'s suffix names."""
    if path.suffix == SKOPS_SUFFIX:
        import skops.io

        return skops.io.dumps(pipeline)
    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer)
    return buffer.getvalue()


def save_pipeline(pipeline, path):
    """Save a fitted pipeline (or any fitted estimator) atomically with a JSON sidecar.

    Parameters
    ----------
    pipeline : estimator
        A fitted :class:`~sklearn.pipeline.Pipeline` or a single estimator, e.g. a head
        fitted on embeddings.
    path : str or os.PathLike
        The model file. A ``.skops`` suffix writes the safe :mod:`skops.io` format; any
        other suffix (e.g. ``.joblib``) a plain ``joblib.dump``. The sidecar is
        ``<path>.json``. Missing parent folders are created; existing files are replaced.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        If ``pipeline`` is not fitted, ``path`` is a folder, or a part of its folder is a
        regular file.
    TypeError
        If ``pipeline`` is not an estimator instance or ``path`` not a path.

    Notes
    -----
    Each file is written to a unique temporary file in the target folder, fsynced and
    renamed into place (``os.replace``): first the model, then the sidecar, which names
    the model's sha256. A crash at any point leaves the old pair, or the new model with
    the old sidecar (refused on load as a mismatch, never silently paired), or the new
    pair. Temporary files of killed saves are removed by the next save to the same path.
    With the environment variable ``TRIPLET_SIGNING_KEY`` set, the sidecar also holds an
    HMAC-SHA256 of the model under that key.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> import tempfile, pathlib
    >>> X, y = load_iris(return_X_y=True)
    >>> head = LogisticRegression(max_iter=500).fit(X, y)
    >>> path = save_pipeline(head, pathlib.Path(tempfile.mkdtemp()) / "head.skops")
    >>> (load_pipeline(path).predict(X) == head.predict(X)).all()
    np.True_
    """
    _check_savable(pipeline, path)
    path = Path(path)
    data = _dumps(pipeline, path)
    metadata = _metadata(pipeline, data)
    atomic_write_bytes(path, data)
    atomic_write_text(sidecar_path(path), json.dumps(metadata, indent=2) + "\n")
    return path


def _minor(version):
    return tuple(version.split(".")[:2]) if isinstance(version, str) else None


def _read_sidecar(sidecar):
    """The sidecar's metadata, or the reason it cannot serve to verify the model."""
    if not os.path.lexists(sidecar):
        return None, f"it has no sidecar {sidecar.name}"
    if not sidecar.is_file():
        return None, f"its sidecar {sidecar} is not a regular file"
    try:
        metadata = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"its sidecar {sidecar} cannot be read ({type(exc).__name__}: {exc})"
    if not isinstance(metadata, dict):
        kind = type(metadata).__name__
        return None, f"its sidecar {sidecar} must hold a JSON object, got a {kind}"
    if not isinstance(metadata.get("versions", {}), dict):
        kind = type(metadata["versions"]).__name__
        return None, f"its sidecar {sidecar} has 'versions' of type {kind}, expected an object"
    if not isinstance(metadata.get("sha256"), str):
        return None, f"its sidecar {sidecar} has no sha256 string of the model file"
    return metadata, None


def _check_versions(path, sidecar, metadata, check_versions):
    problems = []
    fmt = metadata.get("format_version")
    if not isinstance(fmt, int) or fmt > FORMAT_VERSION:
        problems.append(
            f"{sidecar} has format_version {fmt!r}, this version of {_PACKAGE} "
            f"reads format_version <= {FORMAT_VERSION}; upgrade {_PACKAGE}"
        )
    saved = metadata.get("versions", {}).get("scikit-learn")
    if _minor(saved) != _minor(sklearn.__version__):
        problems.append(
            f"{path} was saved with scikit-learn {saved}, the installed scikit-learn is "
            f"{sklearn.__version__} (major.minor must match); install "
            f"scikit-learn=={saved} to load it, or retrain"
        )
    if problems:
        message = "incompatible version: " + "; ".join(problems)
        if check_versions:
            raise ValueError(message)
        warnings.warn(message, UserWarning, stacklevel=4)


def _check_digests(path, sidecar, metadata, data):
    """The reason ``data`` does not match the sidecar (sha256, then HMAC), or None."""
    actual = hashlib.sha256(data).hexdigest()
    if metadata["sha256"] != actual:
        return (
            f"{path} does not match its sidecar {sidecar.name} (sha256 {actual}, the "
            f"sidecar says {metadata['sha256']}): it was altered or truncated after "
            "saving, or a save was interrupted"
        )
    key = _signing_key()
    if key is None:
        return None
    saved = metadata.get("hmac")
    if not isinstance(saved, str):
        return f"{SIGNING_KEY_ENV} is set, but the sidecar {sidecar.name} holds no signature"
    if not hmac.compare_digest(saved, _signature(key, data)):
        return f"its signature does not match the key in {SIGNING_KEY_ENV}"
    return None


def _verify(path, data, *, required, trusted, check_versions):
    """Check ``data`` (the bytes of ``path``) against the sidecar before deserialising.

    ``required``: whether an unverifiable file is refused (joblib) or loads anyway
    (skops, which is safe by construction). ``trusted`` turns refusals into warnings.
    """
    sidecar = sidecar_path(path)
    metadata, problem = _read_sidecar(sidecar)
    if metadata is not None:
        problem = _check_digests(path, sidecar, metadata, data)
    if problem is None or (metadata is None and not required):
        pass
    elif trusted:
        warnings.warn(f"loading {path} unverified (trusted=True): {problem}", UserWarning,
                      stacklevel=3)
    elif required:
        raise ValueError(
            f"refusing to load {path}: {problem}. Unpickling a file runs code chosen by "
            "its author, so only verified files are loaded; pass trusted=True (CLI: "
            "--trust) only if you trust its source, or use the .skops format"
        )
    else:
        raise ValueError(f"refusing to load {path}: {problem}; pass trusted=True (CLI: "
                         "--trust) to load it all the same")
    if metadata is not None:
        _check_versions(path, sidecar, metadata, check_versions)


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


def _deserialise(path, data, skops_format):
    """The object in ``data``; every failure becomes an error naming ``path``."""
    if skops_format:
        import skops.io

        allowed = _skops_trusted(path, data)
        load = lambda: skops.io.loads(data, trusted=allowed)  # noqa: E731
    else:
        load = lambda: joblib.load(io.BytesIO(data))  # noqa: E731
    try:
        return load()
    except ImportError as exc:
        raise ImportError(
            f"loading {path} needs the module {exc.name!r}, which cannot be imported: {exc}",
            name=exc.name,
        ) from exc
    except Exception as exc:  # any deserialising failure: truncated, corrupt, wrong format
        kind = ".skops" if skops_format else "joblib"
        raise ValueError(
            f"cannot read pipeline file {path} (truncated or not a {kind} file?): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _skops_trusted(path, data):
    """The allow-listed types ``data`` needs; a ValueError if it needs any other."""
    try:
        allowed, refused = skops_allowed_types(data)
    except Exception as exc:  # zip/JSON errors of a corrupt file
        raise ValueError(
            f"cannot read pipeline file {path} (truncated or not a .skops file?): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if refused:
        raise ValueError(
            f"refusing to load {path}: it needs types outside the allow-list of "
            f"{', '.join(SKOPS_ALLOWED_MODULES)} classes: {few(refused)}"
        )
    return allowed


def load_pipeline(path, *, trusted=False, check_versions=True):
    """Load a pipeline saved by :func:`save_pipeline`, after verifying it.

    .. warning::
       A ``.joblib`` file is a pickle: loading it runs code chosen by whoever wrote it.
       The sidecar check protects against accidents (truncation, a swapped or edited
       file), not against an attacker who can write both files; set
       ``TRIPLET_SIGNING_KEY`` to sign and verify, or use ``.skops`` for files from
       sources you do not trust.

    Parameters
    ----------
    path : str or os.PathLike
        The model file; a ``.skops`` suffix selects the safe format, any other joblib.
    trusted : bool, default=False
        For joblib files: when False, a file without a readable sidecar whose sha256
        (and, with ``TRIPLET_SIGNING_KEY`` set, HMAC) matches the file's bytes is
        refused. When True, such a file loads with a warning; say so only for files
        from a source you trust (e.g. a plain ``joblib.dump`` of your own). ``.skops``
        files load without a sidecar either way, but never when it mismatches, unless
        trusted.
    check_versions : bool, default=True
        When False, an incompatible version is a warning instead of an error
        (deserialising across scikit-learn versions may still fail or misbehave).

    Returns
    -------
    object
        The saved estimator.

    Raises
    ------
    ValueError
        If the file does not exist; if it is unverified (see ``trusted``); if its bytes
        differ from the sidecar's sha256 (altered or truncated) or signature; if it
        cannot be deserialised; if a ``.skops`` file needs a type outside the
        allow-list; if the sidecar's ``format_version`` is newer than supported or the
        saved scikit-learn major.minor differs from the installed one ("incompatible
        version").
    ImportError
        If the saved object needs a module that cannot be imported (e.g. TensorFlow
        for a pipeline with a ``TripletEmbedder``).

    Notes
    -----
    The file is read once into memory; the same bytes are hashed and deserialised, so
    a file swapped after the check is never the one loaded.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"pipeline file {path} does not exist or is not a file")
    data = path.read_bytes()
    skops_format = path.suffix == SKOPS_SUFFIX
    _verify(path, data, required=not skops_format, trusted=trusted,
            check_versions=check_versions)
    return _deserialise(path, data, skops_format)
