"""The JSON sidecar of a saved pipeline, and the check of a model file against it.

:func:`sidecar_metadata` is what ``<file>.json`` records: format version, library
versions, the sha256 of the model file (and its HMAC-SHA256 under the key in the
environment variable :data:`SIGNING_KEY_ENV`, when set), classes, step names and classes,
and the parameters of the ``"embed"`` step. :func:`verify_against_sidecar` checks a model
file's bytes against it before anything is deserialised: a missing, unreadable or
mismatching sidecar (or signature) refuses the file unless ``trusted``, and an
incompatible format or scikit-learn version is an error (or a warning). This module never
imports TensorFlow (versions come from the package metadata).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.metadata
import json
import os
import platform
import warnings
from datetime import datetime, timezone
from pathlib import Path

import sklearn

from embedder.checks import summary
from pipelines.text import jsonable

FORMAT_VERSION = 1
#: Environment variable holding the key that signs (HMAC-SHA256) and verifies files.
SIGNING_KEY_ENV = "TRIPLET_SIGNING_KEY"
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
    """The key in :data:`SIGNING_KEY_ENV`, or None where it is unset.

    Set but empty (or blank) fails closed: treating it as unset would silently accept
    unsigned, forged sidecars where the owner meant to require signatures.
    """
    key = os.environ.get(SIGNING_KEY_ENV)
    if key is None:
        return None
    if not key.strip():
        raise ValueError(
            f"{SIGNING_KEY_ENV} is set but empty: set it to the signing key, or unset it "
            "to save and load without a signature"
        )
    return key.encode("utf-8")


def _signature(key, data):
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def sidecar_metadata(pipeline, data):
    """The sidecar's content for ``pipeline`` saved as the bytes ``data``."""
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


def _minor(version):
    return tuple(version.split(".")[:2]) if isinstance(version, str) else None


def _read_sidecar(sidecar):
    """The sidecar's metadata, or the reason it cannot serve to verify the model."""
    if not os.path.lexists(sidecar):
        return None, f"it has no sidecar {sidecar.name}"
    if not sidecar.is_file():
        return None, f"its sidecar {sidecar.name} is not a regular file"
    try:
        metadata = json.loads(sidecar.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        return None, f"its sidecar {sidecar.name} is not JSON ({exc.msg})"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = summary(f"{type(exc).__name__}: {exc}", 80)
        return None, f"its sidecar {sidecar.name} cannot be read ({reason})"
    if not isinstance(metadata, dict):
        kind = type(metadata).__name__
        return None, f"its sidecar {sidecar.name} must hold a JSON object, got a {kind}"
    if not isinstance(metadata.get("versions", {}), dict):
        kind = type(metadata["versions"]).__name__
        return None, (f"its sidecar {sidecar.name} has 'versions' of type {kind}, expected an "
                      "object")
    if not isinstance(metadata.get("sha256"), str):
        return None, f"its sidecar {sidecar.name} has no sha256 string of the model file"
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
        return (f"it does not match its sidecar {sidecar.name} (sha256): altered, "
                "truncated, or an interrupted save")
    key = _signing_key()
    if key is None:
        return None
    saved = metadata.get("hmac")
    if not isinstance(saved, str):
        return f"{SIGNING_KEY_ENV} is set, but the sidecar {sidecar.name} holds no signature"
    if not hmac.compare_digest(saved, _signature(key, data)):
        return f"its signature does not match the key in {SIGNING_KEY_ENV}"
    return None


def verify_against_sidecar(path, data, *, required, trusted, check_versions):
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
            f"refusing to load {path}: {problem}. Unpickling runs its code: pass "
            "trusted=True (CLI: --trust) only for a source you trust"
        )
    else:
        raise ValueError(f"refusing to load {path}: {problem}; pass trusted=True (CLI: "
                         "--trust) to load it all the same")
    if metadata is not None:
        _check_versions(path, sidecar, metadata, check_versions)
