"""The one home of input checks shared by the estimators, the pipelines and the CLI.

Pure Python and NumPy (no TensorFlow), so ``classifiers`` and reports may use it.
Messages name the argument, say what was expected and what was received, list at most
a few items with a count (:func:`few`) and stay under :data:`MESSAGE_LIMIT` characters;
a foreign text (a library's exception) goes in through :func:`summary`.
"""

from __future__ import annotations

import os
import re

import numpy as np

__all__ = [
    "MESSAGE_LIMIT", "check_existing_files", "check_images", "check_non_empty",
    "check_two_classes", "column_labels", "few", "is_paths", "summary",
]

#: Longest error message, in characters (the CLI's whole ``triplet: error: ...`` line).
MESSAGE_LIMIT = 300
_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _plain(item):
    """NumPy scalars as Python values, so ``repr`` reads ``3``, not ``np.int64(3)``."""
    return item.item() if isinstance(item, np.generic) else item


def few(items, n=5, formatter=repr):
    """A short listing of ``items``: at most ``n`` of them, then how many more.

    Parameters
    ----------
    items : iterable
        The things to list (classes, file names, ...).
    n : int, default=5
        How many to show.
    formatter : callable, default=repr
        Turns one item (NumPy scalars already made Python values) into its text.

    Returns
    -------
    str
        E.g. ``"'a', 'b', 'c', 'd', 'e' and 15 more (20 in all)"``, or the full
        listing ``"'a', 'b'"`` when there are at most ``n``.

    Examples
    --------
    >>> few(["a", "b", "c"], n=2)
    "'a', 'b' and 1 more (3 in all)"
    >>> few([1, 2])
    '1, 2'
    """
    items = list(np.asarray(items).ravel()) if isinstance(items, np.ndarray) else list(items)
    shown = ", ".join(formatter(_plain(item)) for item in items[:n])
    if len(items) <= n:
        return shown
    return f"{shown} and {len(items) - n} more ({len(items)} in all)"


def summary(text, limit=MESSAGE_LIMIT, *, hint=""):
    """``text`` on one line of at most ``limit`` characters.

    Whitespace (newlines too) collapses to single spaces and terminal colour codes go.
    A longer text keeps its start, which names the file or argument, and ends with how
    much was cut. An exception gives its text, or its type's name when that is empty.

    Parameters
    ----------
    text : str or BaseException
        The message, e.g. a library's exception.
    limit : int, default=MESSAGE_LIMIT
        Most characters returned.
    hint : str, default=""
        Appended inside the parentheses of a cut text, e.g. ``"; --verbose shows all"``.

    Returns
    -------
    str

    Examples
    --------
    >>> summary("a\\n  b")
    'a b'
    >>> summary("x" * 50, limit=40)
    'xxxxxxxxxxxxxxxx... (34 more characters)'
    """
    if isinstance(text, BaseException):
        text = str(text) or type(text).__name__
    text = " ".join(_TERMINAL_CODES.sub("", str(text)).split())
    if len(text) <= limit:
        return text
    cut = len(text)  # the count's own digits shrink what is kept: settle in two rounds
    for _ in range(2):
        kept = limit - len(f"... ({cut} more characters{hint})")
        if kept < 1:  # no room to say how much was cut
            return text[:limit]
        cut = len(text) - len(text[:kept].rstrip())
    return text[:kept].rstrip() + f"... ({cut} more characters{hint})"


def column_labels(y, name="y"):
    """``y`` as a 1-D NumPy array; a single column ``(n, 1)`` is squeezed to ``(n,)``.

    Parameters
    ----------
    y : array-like
        Labels: a list, a 1-D array, a pandas Series, or a one-column 2-D array/frame.
    name : str, default="y"
        The argument name used in error messages.

    Returns
    -------
    numpy.ndarray
        The labels, shape ``(n,)``.

    Raises
    ------
    ValueError
        If ``y`` is not 1-D or one column.

    Examples
    --------
    >>> column_labels([[1], [2]]).tolist()
    [1, 2]
    """
    array = np.asarray(y)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D labels (or a single column), got an array of shape "
            f"{array.shape}"
        )
    return array


def check_two_classes(y, name="y"):
    """The sorted classes of ``y``, which must hold at least two.

    Parameters
    ----------
    y : array-like
        1-D labels.
    name : str, default="y"
        The argument name used in error messages.

    Returns
    -------
    numpy.ndarray
        The unique classes.

    Raises
    ------
    ValueError
        If ``y`` has fewer than two classes (a triplet or a classifier needs a negative).
    """
    classes = np.unique(column_labels(y, name))
    if len(classes) < 2:
        got = f"1 ({few(classes)})" if len(classes) else "none (no labels)"
        raise ValueError(f"{name} must hold at least 2 classes, got {got}")
    return classes


def check_non_empty(X, name="X"):
    """Raise a clear ValueError when ``X`` holds no images.

    Parameters
    ----------
    X : array-like or sequence
        Images (an array whose first axis counts them) or image paths.
    name : str, default="X"
        The argument name used in the message.

    Returns
    -------
    int
        The number of images.

    Raises
    ------
    ValueError
        If ``X`` has 0 images.
    """
    shape = getattr(X, "shape", None)
    n = int(shape[0]) if shape is not None and len(shape) > 0 else len(X)
    if n == 0:
        raise ValueError(f"{name} has 0 images; expected at least 1 image (or image path)")
    return n


def _is_pandas_1d(X):
    module = type(X).__module__ or ""
    return module.startswith("pandas") and getattr(X, "ndim", None) == 1


def is_paths(X):
    """Whether ``X`` is a non-empty 1-D sequence of image paths.

    Accepted: a list or tuple, a 1-D NumPy array, or a pandas ``Series``/``Index`` whose
    items are all ``str`` or :class:`os.PathLike`.

    Parameters
    ----------
    X : object
        The input to classify.

    Returns
    -------
    bool
        True for paths; False otherwise (e.g. an image array, an empty list).

    Examples
    --------
    >>> is_paths(["a.png", "b.png"]), is_paths([]), is_paths([[0.0]])
    (True, False, False)
    """
    if _is_pandas_1d(X):
        items = X.tolist()
    elif isinstance(X, np.ndarray):
        if X.ndim != 1 or X.dtype.kind not in "USO":
            return False
        items = X.tolist()
    elif isinstance(X, list | tuple):
        items = X
    else:
        return False
    return len(items) > 0 and all(isinstance(item, str | os.PathLike) for item in items)


def check_images(X, name="X"):
    """Validate an in-memory image array: numeric, 4-D ``(n, h, w, c)``, non-empty, finite.

    Parameters
    ----------
    X : array-like
        Images, pixels on the 0..255 scale.
    name : str, default="X"
        The argument name used in error messages.

    Returns
    -------
    numpy.ndarray
        ``X`` as an array (the same object when it already is one).

    Raises
    ------
    TypeError
        If the pixels are not numbers.
    ValueError
        If ``X`` is not 4-D, an image has zero height, width or channels, or a pixel is
        NaN or infinite.
    """
    X = np.asarray(X)
    if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
        raise TypeError(f"{name} must hold numeric pixel values, got dtype {X.dtype}")
    if X.ndim != 4:
        raise ValueError(f"{name} must be a 4-D array (n, height, width, channels), got "
                         f"shape {X.shape}")
    if min(X.shape[1:]) == 0:
        raise ValueError(f"{name} must hold images of at least 1 x 1 pixels and 1 channel, "
                         f"got shape {X.shape}")
    if np.issubdtype(X.dtype, np.floating):
        step = max(1, 2**24 // max(1, X[:1].size))  # chunks of ~16M values: bounded memory
        bad = sum(int((~np.isfinite(X[i : i + step])).sum()) for i in range(0, len(X), step))
        if bad:
            raise ValueError(f"{name} must be finite, got {bad} NaN or infinite value(s)")
    return X


def check_existing_files(paths, name="X"):
    """Raise a ValueError listing a few of ``paths`` that are not existing files.

    Parameters
    ----------
    paths : sequence of str
        File paths.
    name : str, default="X"
        What lists them, for the message (an argument or a CSV file).

    Returns
    -------
    list of str
        ``paths``.
    """
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"{name} lists {len(missing)} missing image file(s): {few(missing)}")
    return paths
