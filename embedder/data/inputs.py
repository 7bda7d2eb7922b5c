"""The embedders' three input forms (4-D images, flattened rows, image paths) and shapes."""

from __future__ import annotations

import os

import numpy as np

from embedder.checks import is_paths


def as_paths(X):
    """``X`` as a 1-D object array of path strings, or None when it is not paths."""
    if not is_paths(X):
        return None
    values = X.tolist() if hasattr(X, "tolist") else X
    return np.asarray([os.fspath(p) for p in values], dtype=object)


def path_column(X):
    """Paths given as a one-column table: ``(paths, column_name)``, else ``(None, None)``.

    A ``ColumnTransformer`` hands a transformer its columns as a 1-D ``Series`` for a
    column name (handled by :func:`as_paths`) and as a one-column ``DataFrame`` for a list
    of one name; 2-D arrays of shape ``(n, 1)`` holding paths count too.

    Parameters
    ----------
    X : object
        The input.

    Returns
    -------
    paths : ndarray of object or None
        1-D array of path strings.
    name : str or None
        The column's name (a ``DataFrame``'s), else None.
    """
    columns = getattr(X, "columns", None)
    if columns is not None and getattr(X, "ndim", None) == 2 and len(columns) == 1:
        return as_paths(X.iloc[:, 0]), str(columns[0])
    if isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == 1:
        return as_paths(X[:, 0]), None
    return None, None


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
        source = "" if input_shape is not None else " (the shape of the images in X)"
        raise ValueError(
            "input_shape must be (height, width, channels) with positive ints and 1, 3"
            f" or 4 channels, got {shape!r}{source}"
        )
    return shape
