"""Helpers of :class:`~embedder.estimator.TripletEmbedder` for its three input forms."""

from __future__ import annotations

import os

import numpy as np


def is_paths(X):
    """Whether ``X`` is a non-empty list/1-D array of image paths."""
    if isinstance(X, np.ndarray):
        return X.ndim == 1 and X.dtype.kind in "USO" and len(X) > 0 and isinstance(
            X.flat[0], (str, os.PathLike)
        )
    if isinstance(X, (list, tuple)) and X:
        return all(isinstance(x, (str, os.PathLike)) for x in X)
    return False


def is_int_triple(shape):
    """Whether ``shape`` is three positive integers."""
    try:
        return len(shape) == 3 and all(int(s) == s and s > 0 for s in shape)
    except TypeError:
        return False


def shape_for_features(n_features):
    """Image shape for a flattened row when ``input_shape=None``: square grey, or a strip."""
    side = int(round(np.sqrt(n_features)))
    return (side, side, 1) if side * side == n_features else (1, n_features, 1)


def resolve_input_shape(input_shape, inferred):
    """``input_shape`` (or ``inferred`` when it is None) as a checked tuple of 3 ints."""
    shape = inferred if input_shape is None else input_shape
    shape = tuple(int(s) for s in shape) if is_int_triple(shape) else shape
    if not is_int_triple(shape) or shape[-1] not in (1, 3, 4):
        raise ValueError(
            "input_shape must be (height, width, channels) with positive ints and 1, 3"
            f" or 4 channels, got {input_shape!r}"
        )
    return shape
