"""The saved-encoder format: ``ENCODER.keras`` plus its fingerprint sidecar, and bytes.

``save_encoder(model, "enc.keras", fingerprints)`` writes the Keras archive and
``enc.keras.fingerprints.json``: the content digests of the images the encoder was
trained on (see :mod:`embedder.data.fingerprints`) and the sha256 of the ``.keras`` file they
belong to. Both are written atomically, the model first. A reader that finds a sidecar
naming another file's digest (a save killed between the two renames, or a model copied
over by hand) ignores its fingerprints and says so, instead of pairing an encoder with
another run's training set.

Pickling a fitted embedder stores its encoder as ``.keras`` bytes
(:func:`model_to_bytes`); :func:`model_from_bytes` loads them, in Keras's safe mode
unless the caller trusts the source.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

FINGERPRINTS_SUFFIX = ".fingerprints.json"


def fingerprints_path(path) -> Path:
    """The sidecar of the encoder file ``path``."""
    path = Path(path)
    return path.with_name(path.name + FINGERPRINTS_SUFFIX)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_encoder(model, path, fingerprints) -> Path:
    """Save ``model`` as ``.keras`` and the training fingerprints beside it, atomically.

    Parameters
    ----------
    model : keras.Model
        The encoder.
    path : str or path-like
        Target file; must end with ``.keras``. Missing folders are created.
    fingerprints : array-like of str
        Content digests of the training images (empty when unknown).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from embedder.files import atomic_write_bytes, atomic_write_text

    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"path must end with '.keras', got {str(path)!r}")
    if path.parent.exists() and not path.parent.is_dir():
        raise ValueError(f"path {str(path)!r} is inside {str(path.parent)!r}, which is a "
                         "file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = model_to_bytes(model)
    atomic_write_bytes(path, data)
    sidecar = {"encoder_sha256": _sha256(data),
               "fingerprints": [str(f) for f in np.asarray(fingerprints, dtype=str)]}
    atomic_write_text(fingerprints_path(path), json.dumps(sidecar))
    return path


def load_encoder_file(path, *, safe_mode=True):
    """Load a saved encoder and the fingerprints of its training images.

    Parameters
    ----------
    path : str or path-like
        A ``.keras`` file written by :func:`save_encoder` (or any Keras encoder).
    safe_mode : bool, default=True
        Keras's safe mode: refuses archives that would run arbitrary code (lambdas).

    Returns
    -------
    model : keras.Model
    fingerprints : ndarray of str
        Empty when the sidecar is missing, unreadable or belongs to another file.
    digest : str
        The sha256 of the loaded ``.keras`` bytes.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"encoder file {str(path)!r} does not exist or is not a file")
    data = path.read_bytes()
    model = model_from_bytes(data, safe_mode=safe_mode, name=str(path))
    digest = _sha256(data)
    return model, _read_fingerprints(path, digest), digest


def _read_fingerprints(path, digest) -> np.ndarray:
    sidecar = fingerprints_path(path)
    empty = np.asarray([], dtype=str)
    if not sidecar.is_file():
        return empty
    try:
        saved = json.loads(sidecar.read_text(encoding="utf-8"))
        prints, owner = saved["fingerprints"], saved["encoder_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        warnings.warn(f"{sidecar.name} is unreadable: the encoder's training images are "
                      "unknown", UserWarning, stacklevel=3)
        return empty
    if owner != digest:
        warnings.warn(f"{sidecar.name} belongs to another version of {path.name} (sha256 "
                      "mismatch): the encoder's training images are unknown", UserWarning,
                      stacklevel=3)
        return empty
    return np.asarray(prints, dtype=str)


def model_to_bytes(model) -> bytes:
    """The ``.keras`` archive of ``model`` as bytes."""
    from embedder.files import os_errors_named

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "encoder.keras"  # Keras writes archives to files only
        with os_errors_named(path, "cannot save the encoder to"):  # a full temporary folder
            model.save(path)
        return path.read_bytes()


def model_from_bytes(data, *, safe_mode=True, name="encoder bytes"):
    """Inverse of :func:`model_to_bytes` (uncompiled: encoders are used for inference).

    Raises
    ------
    ValueError
        Naming ``name`` when the bytes are not a Keras model archive.
    """
    from embedder.files import os_errors_named
    from embedder.models.encoders import load_encoder

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "encoder.keras"  # Keras reads archives from files only
        with os_errors_named(path, f"cannot copy {name} to"):  # a full temporary folder
            path.write_bytes(data)
        return load_encoder(path, safe_mode=safe_mode, name=name)


def check_encoder_channels(model, input_shape, path) -> None:
    """``ValueError`` when the encoder in ``path`` reads another channel count than
    ``input_shape`` (say so at ``fit``, not deep inside Keras at ``transform``)."""
    shape = model.input_shape
    expected = shape[-1] if isinstance(shape, tuple) else None
    if expected is not None and expected != input_shape[-1]:
        raise ValueError(
            f"encoder file {os.fspath(path)!r} reads images with {expected} channels, but "
            f"the images have {input_shape[-1]} (input_shape={tuple(input_shape)})")
