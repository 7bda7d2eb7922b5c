"""Labelled image sources: class folders, ``path,label`` CSV files, built-in data sets.

Decoding lives in :mod:`embedder.data.decoding`, the ``tf.data`` pipelines in
:mod:`embedder.data.image_pipeline`; each name has one import path.
"""

from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path

import numpy as np

from embedder.checks import check_existing_files, check_two_classes, few, summary
from embedder.data.decoding import IMAGE_EXTENSIONS

__all__ = ["BUILTINS", "FASHION_MNIST_CLASSES", "load_dataset", "load_fashion_mnist"]

BUILTINS = ("digits", "fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _check_split(split):
    if split not in _FASHION_FILES:
        raise ValueError(f"split must be one of {sorted(_FASHION_FILES)}, got {split!r}")


def _read_idx(path, magic, ndim):
    """Read an IDX file (big-endian int32 magic and sizes, then uint8 values)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    offset = 4 * (1 + ndim)
    header = np.frombuffer(data[:offset], ">i4") if len(data) >= offset else np.zeros(1)
    if header[0] != magic or len(data) != offset + int(np.prod(header[1:])):
        raise ValueError(f"Fashion-MNIST file {str(path)!r} is not a valid IDX file")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(header[1:])


def load_fashion_mnist(split="train"):
    """Fashion-MNIST ``split`` ("train": 60k, "test": 10k) as (uint8 (n, 28, 28, 1), int y).

    Looks for the four IDX ``.gz`` files in ``/usr/share/datasets/fashion-mnist`` (Debian
    package ``dataset-fashion-mnist``), ``$FASHION_MNIST_DIR`` and Keras's cache
    ``~/.keras/datasets/fashion-mnist``; otherwise ``keras.datasets.fashion_mnist``
    downloads them. Class names: :data:`FASHION_MNIST_CLASSES`.
    """
    _check_split(split)
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    folders = [FASHION_MNIST_SYSTEM_DIR, os.environ.get("FASHION_MNIST_DIR"),
               os.path.join(keras_home, "datasets", "fashion-mnist")]
    images, labels = _FASHION_FILES[split]
    for folder in filter(None, folders):
        if all(os.path.isfile(os.path.join(folder, f)) for f in (images, labels)):
            X = _read_idx(os.path.join(folder, images), 2051, 3)[..., None]
            y = _read_idx(os.path.join(folder, labels), 2049, 1).astype(np.int64)
            return X, y
    import keras  # not found locally: download (needs internet)

    train, test = keras.datasets.fashion_mnist.load_data()
    X, y = train if split == "train" else test
    return X[..., None], y.astype(np.int64)


def _load_digits(split):
    _check_split(split)
    if split == "test":
        raise ValueError(
            "split must be 'train' for the built-in 'digits' (it has no test split; use "
            "cross-validation), got 'test'"
        )
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = (digits.images * (255.0 / 16.0)).astype(np.float32)[..., None]
    return X, digits.target.astype(np.int64)


def _inside_links_dropped(root, class_dirs):
    """``class_dirs`` without symlinks into ``root`` itself, with a warning per link.

    A link to the data folder (or to another class folder) would relabel images that
    are already counted under their own class: each would be there twice, with two
    labels. Links to folders outside ``root`` are ordinary class folders.
    """
    real_root = root.resolve()
    kept = []
    for folder in class_dirs:
        target = folder.resolve() if folder.is_symlink() else None
        if target is not None and (target == real_root or real_root in target.parents):
            warnings.warn(f"class folder {str(folder)!r} is a symlink to {str(target)!r} "
                          "inside the data folder: ignored (its images would be counted "
                          "twice, under two labels)", UserWarning, stacklevel=4)
            continue
        kept.append(folder)
    return kept


def _load_folder(root):
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_dirs = _inside_links_dropped(root, class_dirs)
    if not class_dirs:
        raise ValueError(f"folder {str(root)!r} must contain one sub-folder per class, got none")
    paths, labels = [], []
    for folder in class_dirs:
        files = sorted(
            str(p) for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        if not files:
            raise ValueError(
                f"class folder {str(folder)!r} contains no images (expected files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)})"
            )
        paths += files
        labels += [folder.name] * len(files)
    check_two_classes(labels, f"folder {str(root)!r}")
    return np.asarray(paths, dtype=object), np.asarray(labels)


def _load_csv(csv):
    import pandas as pd

    try:
        table = pd.read_csv(csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"CSV file {str(csv)!r} could not be read: "
                         f"{summary(err, 120)}") from err
    if not {"path", "label"} <= set(table.columns):
        raise ValueError(
            f"CSV file {str(csv)!r} must have columns ['path', 'label'], "
            f"got {len(table.columns)}: {few(table.columns)}"
        )
    if len(table) == 0 or table[["path", "label"]].isna().any().any():
        raise ValueError(f"CSV file {str(csv)!r} must list images with no empty path or label")
    paths = [str(p) if os.path.isabs(p) else str(csv.parent / p) for p in table["path"]]
    check_existing_files(paths, f"CSV file {str(csv)!r}")
    y = table["label"].to_numpy()
    check_two_classes(y, f"CSV file {str(csv)!r}")
    return np.asarray(paths, dtype=object), y


def load_dataset(source, *, split="train", input_shape=None):
    """Load labelled images as ``(X, y)``.

    Parameters
    ----------
    source : str or path-like
        A folder with one sub-folder per class (``X``: sorted file paths, ``y``: folder
        names), a CSV file with columns ``path,label`` (relative paths are resolved against
        the CSV's folder), or a built-in name: ``"digits"`` (sklearn, float32
        (1797, 8, 8, 1) scaled to 0..255; no test split) or ``"fashion-mnist"`` (uint8
        (n, 28, 28, 1)).
    split : {"train", "test"}, default="train"
        Split of a built-in set.
    input_shape : tuple of int, optional
        If given, images are decoded/converted into a float32 array of shape
        ``(n, *input_shape)`` instead of returning paths (or the built-in's own array).

    Returns
    -------
    X : ndarray
        1-D object array of file paths or a 4-D array of pixels on the 0..255 scale.
    y : ndarray of shape (n,)
    """
    name = str(source).lower().replace("_", "-") if isinstance(source, str) else None
    if isinstance(source, str) and name in BUILTINS and not os.path.exists(source):
        X, y = _load_digits(split) if name == "digits" else load_fashion_mnist(split)
    elif not isinstance(source, str | os.PathLike):
        raise TypeError(f"source must be a path or a built-in name, got {type(source).__name__}")
    elif os.path.isdir(source):
        X, y = _load_folder(Path(source))
    elif os.path.isfile(source) and str(source).lower().endswith(".csv"):
        X, y = _load_csv(Path(source))
    else:
        what = "is not a folder or a .csv file" if os.path.exists(source) else "does not exist"
        raise ValueError(
            f"source must be a folder of class sub-folders, a CSV file (path,label) or one of "
            f"{list(BUILTINS)}, got {str(source)!r} (which {what})"
        )
    if input_shape is not None:
        from embedder.data.image_pipeline import image_batches, iterate_batches

        X = np.concatenate(list(iterate_batches(image_batches(X, input_shape))))
    return X, y
