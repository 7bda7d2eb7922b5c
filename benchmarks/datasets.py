"""Benchmark data: Fashion-MNIST (installed IDX files), PNG copies of it, Omniglot."""

from __future__ import annotations

import functools
import gzip
import os
import zipfile
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE_DIR, ROOT, DataUnavailable

HARD_FIVE = (0, 2, 3, 4, 6)  # T-shirt/top, Pullover, Dress, Coat, Shirt
OMNIGLOT_ZIPS = ("images_background_small1.zip", "images_background_small2.zip")
#: Alphabets in both Omniglot background sets: dropped from the evaluation side.
OMNIGLOT_SHARED_ALPHABETS = ("Greek", "Latin")


#: Where the Debian package ``dataset-fashion-mnist`` puts the IDX files.
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_INSTALL_HINT = ("install it with `apt-get install -y dataset-fashion-mnist` (as root; "
                        "`make bench-quick` does) or set $FASHION_MNIST_DIR")


def fashion_mnist_folders():
    """Folders searched for the Fashion-MNIST IDX files, in order (the library's list)."""
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return [f for f in (FASHION_MNIST_SYSTEM_DIR, os.environ.get("FASHION_MNIST_DIR"),
                        os.path.join(keras_home, "datasets", "fashion-mnist")) if f]


def read_idx(path, ndim):
    """Array of an IDX ``.gz`` file (big-endian int32 magic and sizes, then uint8 values)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    offset = 4 * (1 + ndim)
    header = np.frombuffer(data[:offset], ">i4") if len(data) >= offset else np.zeros(1)
    if header[0] != 2048 + ndim or len(data) != offset + int(np.prod(header[1:])):
        raise ValueError(f"{str(path)!r} is not a valid IDX file of {ndim} dimension(s)")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(header[1:])


@functools.lru_cache(maxsize=2)
def fashion_mnist(split):
    """Fashion-MNIST ``split`` as (uint8 (n, 28, 28, 1), int64 labels), never downloaded.

    Reads the IDX files itself (no TensorFlow import, so the peer benchmark's PyTorch
    worker can use it). Cached: callers must not modify the arrays (they are read-only).
    """
    images, labels = FASHION_FILES[split]
    folders = fashion_mnist_folders()
    for folder in folders:
        if all(os.path.isfile(os.path.join(folder, f)) for f in (images, labels)):
            X = read_idx(os.path.join(folder, images), 3)[..., None]
            y = read_idx(os.path.join(folder, labels), 1).astype(np.int64)
            X.setflags(write=False)
            y.setflags(write=False)
            return X, y
    # the library would download it; benchmarks must not
    raise DataUnavailable(f"Fashion-MNIST is not installed (looked in {', '.join(folders)}); "
                          + FASHION_INSTALL_HINT)


def subset_classes(X, y, classes):
    """Images of ``classes`` only, labels kept as they are."""
    keep = np.isin(y, classes)
    return X[keep], y[keep]


def image_folder(X, y, name, suffix=".png"):
    """Write images as ``CACHE_DIR/name/<label>/<i><suffix>``; return (paths, labels).

    ``X`` must be a prefix of the same array on every call with one ``name`` (e.g. the
    first ``n`` training images): a ``done`` marker records how many files exist, so only
    the missing ones are written and an interrupted write is resumed.
    """
    from PIL import Image

    root = CACHE_DIR / name
    marker = root / "done"
    paths = np.asarray(
        [str(root / str(int(label)) / f"{i:06d}{suffix}") for i, label in enumerate(y)],
        dtype=object,
    )
    done = int(marker.read_text()) if marker.exists() else 0
    if done < len(y):
        for label in np.unique(y):
            (root / str(int(label))).mkdir(parents=True, exist_ok=True)
        for path, image in zip(paths[done:], X[done:], strict=True):
            Image.fromarray(np.asarray(image, dtype=np.uint8).squeeze(-1)).save(path)
        marker.write_text(str(len(y)))
    return paths, np.asarray(y)


def _omniglot_dir():
    candidates = [os.environ.get("OMNIGLOT_DIR"), ROOT.parent.parent / "shared/data/omniglot"]
    for folder in filter(None, candidates):
        if all((Path(folder) / z).is_file() for z in OMNIGLOT_ZIPS):
            return Path(folder)
    raise DataUnavailable(
        f"Omniglot zips {list(OMNIGLOT_ZIPS)} not found in $OMNIGLOT_DIR or "
        f"{ROOT.parent.parent / 'shared/data/omniglot'}"
    )


def _unzip(zip_path):
    target = CACHE_DIR / "omniglot"
    marker = target / f"{zip_path.stem}.done"
    if not marker.exists():
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(target)
        marker.touch()
    return target / zip_path.stem


@functools.lru_cache(maxsize=4)
def omniglot(which, input_shape=(28, 28, 1), max_classes=None):
    """Omniglot background set ``which`` (1 or 2) as (float32 images, labels, alphabets).

    Classes are characters (``"alphabet/characterNN"``); set 2 leaves out the alphabets
    that set 1 also has, so its characters are never seen in training. Images are decoded
    and resized (antialiased) by :func:`embedder.data.image_batches`. Cached: callers must
    not modify the arrays (they are read-only).
    """
    from embedder.data.image_pipeline import image_batches, iterate_batches

    folder = _unzip(_omniglot_dir() / OMNIGLOT_ZIPS[which - 1])
    skip = OMNIGLOT_SHARED_ALPHABETS if which == 2 else ()
    characters = sorted(
        p for p in folder.glob("*/*") if p.is_dir() and p.parent.name not in skip
    )
    if max_classes is not None:  # a spread over all alphabets, not the first one only
        characters = [characters[i] for i in np.linspace(
            0, len(characters) - 1, min(max_classes, len(characters))).astype(int)]
    paths, labels = [], []
    for char in characters:
        files = sorted(str(f) for f in char.glob("*.png"))
        paths += files
        labels += [f"{char.parent.name}/{char.name}"] * len(files)
    X = np.concatenate(list(iterate_batches(image_batches(paths, input_shape))))
    labels = np.asarray(labels)
    X.setflags(write=False)
    labels.setflags(write=False)
    return X, labels, sorted({label.split("/")[0] for label in labels})
