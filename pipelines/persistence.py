"""Save and load fitted pipelines: one joblib file plus a JSON sidecar.

``save_pipeline(p, "model.joblib")`` writes ``model.joblib`` (a plain ``joblib.dump``, so
``joblib.load`` reads it too) and ``model.joblib.json``: format version, library
versions, the sha256 of the joblib file, classes, step names and classes, and the
parameters of the ``"embed"`` step. This module never imports TensorFlow (its version
comes from the package metadata), so a head saved on embeddings loads without it.
"""

import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path

import joblib
import numpy as np
import sklearn

FORMAT_VERSION = 1
_PACKAGE = "triplet-embeddings"
_LIBRARIES = ("tensorflow", "keras", "scikit-learn", "numpy", "joblib")


def sidecar_path(path):
    """The JSON sidecar of ``path``: the same name with ``.json`` appended."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _version(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _json_safe(value):
    """``value`` as JSON data; what JSON cannot hold becomes its ``repr``."""
    if isinstance(value, np.generic | np.ndarray):
        value = value.tolist()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_safe(v) for k, v in value.items()}
    return repr(value)


def _qualname(obj):
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _metadata(pipeline, sha256):
    steps = getattr(pipeline, "steps", None)
    steps = steps if isinstance(steps, list) else []
    named = dict(steps)
    embed = named.get("embed")
    embed_params = None
    if embed is not None and hasattr(embed, "get_params"):
        embed_params = _json_safe(embed.get_params(deep=False))
    try:
        package_version = importlib.metadata.version(_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        package_version = "unknown"
    return {
        "format_version": FORMAT_VERSION,
        _PACKAGE: package_version,
        "versions": {name: _version(name) for name in _LIBRARIES},
        "python": platform.python_version(),
        "sha256": sha256,
        "estimator": _qualname(pipeline),
        "classes": _json_safe(getattr(pipeline, "classes_", None)),
        "steps": [{"name": name, "class": _qualname(step)} for name, step in steps],
        "embed_params": embed_params,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def save_pipeline(pipeline, path):
    """Save a fitted pipeline (or any estimator) atomically with a JSON sidecar.

    Parameters
    ----------
    pipeline : estimator
        A fitted :class:`~sklearn.pipeline.Pipeline` or a single estimator, e.g. a head
        fitted on embeddings.
    path : str or os.PathLike
        The joblib file to write; the sidecar is ``<path>.json``. Missing parent folders
        are created; existing files are replaced.

    Returns
    -------
    pathlib.Path
        ``path``.

    Notes
    -----
    Both files are first written to temporary files in the target folder. Then the old
    sidecar is deleted, the joblib file is renamed into place and the sidecar last
    (``os.replace``, atomic on one file system). A crash at any point therefore leaves
    either the old pair, or a joblib file without sidecar (which loads with a warning),
    or the new pair, never a joblib file beside a sidecar that does not describe it. An
    error while writing (e.g. an object that cannot be pickled, a full disk) leaves no
    temporary file behind and the old files untouched.
    """
    if not callable(getattr(pipeline, "fit", None)) or isinstance(pipeline, type):
        raise TypeError(
            f"pipeline must be a fitted scikit-learn estimator instance, got {pipeline!r}"
        )
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path must be a file name, got the folder {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = sidecar_path(path)
    token = f"{os.getpid()}.{uuid.uuid4().hex}.tmp"
    tmp_model = path.with_name(f".{path.name}.{token}")
    tmp_sidecar = path.with_name(f".{sidecar.name}.{token}")
    try:
        joblib.dump(pipeline, tmp_model)
        metadata = _metadata(pipeline, _sha256(tmp_model))
        tmp_sidecar.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        sidecar.unlink(missing_ok=True)
        os.replace(tmp_model, path)
        os.replace(tmp_sidecar, sidecar)
    finally:
        for tmp in (tmp_model, tmp_sidecar):
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    return path


def _minor(version):
    return tuple(version.split(".")[:2]) if isinstance(version, str) else None


def _check_metadata(path, sidecar, metadata, check_versions):
    if not isinstance(metadata, dict):
        raise ValueError(f"{sidecar} must hold a JSON object, got {type(metadata).__name__}")
    problems = []
    fmt = metadata.get("format_version")
    if not isinstance(fmt, int) or fmt > FORMAT_VERSION:
        problems.append(
            f"{sidecar} has format_version {fmt!r}, this version of {_PACKAGE} "
            f"reads format_version <= {FORMAT_VERSION}; upgrade {_PACKAGE}"
        )
    saved = (metadata.get("versions") or {}).get("scikit-learn")
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
        warnings.warn(message, UserWarning, stacklevel=3)
    actual = _sha256(path)
    if metadata.get("sha256") != actual:
        raise ValueError(
            f"{path} was altered or truncated after saving: sha256 mismatch "
            f"(the sidecar {sidecar.name} says {metadata.get('sha256')}, the file has {actual})"
        )


def load_pipeline(path, *, check_versions=True):
    """Load a pipeline saved by :func:`save_pipeline`, after checking its sidecar.

    Parameters
    ----------
    path : str or os.PathLike
        The joblib file.
    check_versions : bool, default=True
        When False, an incompatible version is a warning instead of an error (unpickling
        across scikit-learn versions may still fail or misbehave).

    Returns
    -------
    object
        The saved estimator.

    Raises
    ------
    ValueError
        If the file does not exist; if it differs from the sha256 in the sidecar
        (altered or truncated); if joblib cannot read it; if the sidecar is unreadable or
        its ``format_version`` is newer than supported or the saved scikit-learn
        major.minor differs from the installed one ("incompatible version").
    ImportError
        If the saved object needs a module that cannot be imported (e.g. TensorFlow
        for a pipeline with a ``TripletEmbedder``).

    Warns
    -----
    UserWarning
        If the sidecar is missing: the file loads unchecked, so plain ``joblib.dump``
        files still load.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"pipeline file {path} does not exist or is not a file")
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        try:
            metadata = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read the sidecar {sidecar}: {exc}") from exc
        _check_metadata(path, sidecar, metadata, check_versions)
    else:
        warnings.warn(
            f"{path} has no sidecar {sidecar.name}: loading it without checking its "
            "integrity or library versions",
            UserWarning,
            stacklevel=2,
        )
    try:
        return joblib.load(path)
    except ImportError as exc:
        raise ImportError(
            f"loading {path} needs the module {exc.name!r}, which cannot be imported: {exc}",
            name=exc.name,
        ) from exc
    except Exception as exc:  # any unpickling failure: truncated, corrupt, not joblib
        raise ValueError(
            f"cannot read pipeline file {path} (truncated or not a joblib file?): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
