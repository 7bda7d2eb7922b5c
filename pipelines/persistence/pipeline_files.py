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

The sidecar and the verification against it live in :mod:`pipelines._sidecar`, the
``.skops`` allow-list in :mod:`pipelines._skops_format`; this module chooses the format,
writes and reads the files.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import joblib
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from embedder.checks import summary
from embedder.files import atomic_write_bytes, atomic_write_text
from pipelines.persistence.sidecar import (
    sidecar_metadata,
    sidecar_path,
    verify_against_sidecar,
)
from pipelines.persistence.skops_format import skops_trusted_types

SKOPS_SUFFIX = ".skops"


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
    metadata = sidecar_metadata(pipeline, data)
    atomic_write_bytes(path, data)
    atomic_write_text(sidecar_path(path), json.dumps(metadata, indent=2) + "\n")
    return path


def _deserialise(path, data, skops_format):
    """The object in ``data``; every failure becomes an error naming ``path``."""
    if skops_format:
        import skops.io

        allowed = skops_trusted_types(path, data)
        load = lambda: skops.io.loads(data, trusted=allowed)  # noqa: E731
    else:
        load = lambda: joblib.load(io.BytesIO(data))  # noqa: E731
    try:
        return load()
    except ImportError as exc:
        raise ImportError(
            f"loading {path} needs the module {exc.name!r}, which cannot be imported: "
            f"{summary(exc, 100)}",
            name=exc.name,
        ) from exc
    except ValueError as exc:  # says why itself, e.g. Keras's safe mode refusing a lambda
        raise ValueError(f"cannot read pipeline file {path}: {summary(exc, 200)}") from exc
    except Exception as exc:  # any deserialising failure: truncated, corrupt, wrong format
        kind = ".skops" if skops_format else "joblib"
        raise ValueError(
            f"cannot read pipeline file {path} (truncated or not a {kind} file?): "
            f"{summary(f'{type(exc).__name__}: {exc}', 120)}"
        ) from exc


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
    verify_against_sidecar(path, data, required=not skops_format, trusted=trusted,
                           check_versions=check_versions)
    return _deserialise(path, data, skops_format)
