"""Helpers shared by the ``triplet`` commands: data loading, shapes, tables."""

from __future__ import annotations

import sys

import numpy as np

#: Largest --image-size: a 4096 x 4096 x 3 float32 image is 192 MiB before any batch.
MAX_IMAGE_SIZE = 4096


def progress() -> int:
    """Keras verbosity: progress bars on a terminal, one line per epoch in logs/pipes."""
    return 1 if sys.stdout.isatty() else 2


def load(data):
    """``load_dataset(data)`` with a one-line summary of what was found."""
    from embedder.data.datasets import load_dataset

    X, y = load_dataset(data)
    print(f"DATA {data}: {len(y)} images, {len(np.unique(y))} classes", flush=True)
    return X, y


def input_shape(args, X):
    """Arrays carry their own shape; files are decoded to --image-size (else the default)."""
    if getattr(args, "image_size", None) is None or np.asarray(X).ndim != 1:
        return None
    if not 8 <= args.image_size <= MAX_IMAGE_SIZE:
        raise ValueError(f"--image-size must be between 8 and {MAX_IMAGE_SIZE} pixels, "
                         f"got {args.image_size}")
    return (args.image_size, args.image_size, 3)


def table(rows) -> str:
    """Two aligned columns: ``name  value`` per row."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
