"""Small synthetic image sets for tests (no data set is committed or downloaded)."""

from __future__ import annotations

import numpy as np

SHAPES = ("square", "disc", "cross", "hbar", "triangle")


def _draw(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One boolean mask of ``shape``, jittered in position and scale."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = size * rng.uniform(0.22, 0.32)
    cy, cx = size / 2 + rng.uniform(-0.12, 0.12, size=2) * size
    dy, dx = yy - cy, xx - cx
    if shape == "square":
        return (np.abs(dy) < r) & (np.abs(dx) < r)
    if shape == "disc":
        return dy**2 + dx**2 < r**2
    if shape == "cross":
        w = r / 3
        return ((np.abs(dy) < w) & (np.abs(dx) < r)) | ((np.abs(dx) < w) & (np.abs(dy) < r))
    if shape == "hbar":
        return (np.abs(dy) < r / 3) & (np.abs(dx) < r * 1.2)
    if shape == "triangle":
        return (dy > -r) & (dy < r) & (np.abs(dx) < (dy + r) / 2)
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def make_shapes(
    n_per_class: int | list[int] = 20,
    size: int = 32,
    channels: int = 3,
    n_classes: int = 5,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Coloured shapes on noisy backgrounds: ``X`` uint8 (n, size, size, channels), ``y`` int.

    ``n_per_class`` may be a list to make an imbalanced set.
    """
    rng = np.random.default_rng(random_state)
    counts = [n_per_class] * n_classes if np.isscalar(n_per_class) else list(n_per_class)
    images, labels = [], []
    for label, count in enumerate(counts):
        for _ in range(count):
            mask = _draw(SHAPES[label % len(SHAPES)], size, rng)
            img = rng.normal(60, 20, size=(size, size, channels))
            colour = rng.uniform(150, 255, size=channels)
            img[mask] = colour + rng.normal(0, 10, size=(int(mask.sum()), channels))
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels)


def write_image_folder(root, X, y, class_names=None, fmt: str = "png") -> list[str]:
    """Write ``X`` as one sub-folder per class under ``root``; return the file paths."""
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    paths = []
    for i, (img, label) in enumerate(zip(X, y, strict=True)):
        name = class_names[label] if class_names is not None else f"class_{label}"
        folder = root / str(name)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{i:04d}.{fmt}"
        arr = img[..., 0] if img.shape[-1] == 1 else img
        Image.fromarray(arr).save(path)
        paths.append(str(path))
    return paths
