"""Fingerprints of images, so a report can tell whether an encoder saw the evaluated images.

A fingerprint is a short hex digest of an image's content: the bytes of the file for a
path, or of the float32 pixel array for an in-memory image. Equal images give equal
fingerprints wherever they come from (a copied folder, a re-loaded array), which is what
leakage detection needs; the digests say nothing about the pixels themselves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

_DIGEST_CHARS = 20


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=_DIGEST_CHARS // 2).hexdigest()


def image_fingerprints(X) -> np.ndarray:
    """Content digests of the images in ``X``.

    Parameters
    ----------
    X : array-like of paths, or numeric array of shape (n, ...)
        A 1-D array/list of image file paths, or images (any numeric dtype; each row is
        hashed as float32 so ``uint8`` and ``float32`` copies of one image agree).

    Returns
    -------
    ndarray of str, shape (n,)
    """
    arr = np.asarray(X) if not isinstance(X, np.ndarray) else X
    if arr.dtype.kind in "USO":
        out = []
        for path in arr.ravel():
            try:
                out.append(_digest(Path(path).read_bytes()))
            except OSError as exc:
                raise ValueError(f"cannot read image file {str(path)!r}: "
                                 f"{exc.strerror or exc}") from exc
        return np.asarray(out, dtype=str)
    if arr.ndim < 2:
        raise ValueError(
            f"X must be a list of image paths or an array of images (n, ...), got shape "
            f"{arr.shape} with dtype {arr.dtype}"
        )
    rows = np.ascontiguousarray(arr.reshape(len(arr), -1), dtype=np.float32)
    return np.asarray([_digest(row.tobytes()) for row in rows], dtype=str)


def overlap(fingerprints_a: Iterable[str], fingerprints_b: Iterable[str]) -> int:
    """Number of distinct images present in both fingerprint collections."""
    return len(set(fingerprints_a).intersection(fingerprints_b))
