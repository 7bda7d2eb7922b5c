"""The confusion-matrix PNG: one row-normalised image, readable from 2 to 1,000+ classes.

Counts are written in the cells up to :data:`MAX_CELL_TEXT` classes (no per-cell artists
beyond), every class is labelled up to :data:`MAX_TICK_LABELS`, and the figure size is
capped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.colors import PowerNorm

from pipelines.plots import common as _plot_common
from pipelines.plots.common import natural_order, new_figure, place_axes, short_name

#: Up to this many classes the confusion matrix shows the count in every cell.
MAX_CELL_TEXT = 30
#: Up to this many classes every row and column of the confusion matrix is labelled.
MAX_TICK_LABELS = 60


def plot_confusion_matrix(matrix, class_names: Sequence[str], path, *, title: str = "") -> str:
    """Draw a confusion matrix heat map (rows: true class, columns: predicted), save as PNG.

    Colours are row-normalised (the share of each true class predicted as each class), so
    small classes are as visible as large ones; counts are written in the cells up to
    :data:`MAX_CELL_TEXT` classes; every class is labelled up to
    :data:`MAX_TICK_LABELS` classes, about 40 evenly spaced ones beyond. Classes are shown
    in natural order (``s2`` before ``s10``). The figure is at most 12 x 11 inches.

    Parameters
    ----------
    matrix : array-like of int, shape (n_classes, n_classes)
        Counts; rows are true classes, columns predicted classes, in ``class_names`` order.
    class_names : sequence of str, length n_classes
        Class names, in the order of the matrix rows and columns.
    path : str or Path
        Where the PNG is written.
    title : str, optional
        Default: "Confusion matrix (summed over folds)".

    Returns
    -------
    str
        The written path.
    """
    matrix = np.asarray(matrix)
    n = len(class_names)
    if matrix.ndim != 2 or matrix.shape != (n, n):
        raise ValueError(
            f"matrix must have shape ({n}, {n}) to match class_names, got {matrix.shape}")
    order = natural_order(class_names)
    matrix = matrix[np.ix_(order, order)]
    names = [short_name(class_names[i]) for i in order]
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    labelled = n <= MAX_TICK_LABELS
    font = float(np.clip(11 - n / 8, 5, 9)) if labelled else 6.0
    # Room for the longest tick label (a character is about 0.6 em) and the axis label.
    margin = 0.6 + 0.6 * font / 72 * max((len(s) for s in names), default=1)
    side = float(np.clip(0.3 * n, 3.0, 9.0))
    fig = new_figure(margin + side + 1.4, margin + side + 0.7)
    ax = place_axes(fig, margin, margin, side, side)
    # A square-root colour scale keeps single confusions visible next to the diagonal.
    image = ax.imshow(share, cmap="Blues", norm=PowerNorm(0.5, vmin=0.0, vmax=1.0),
                      aspect="auto",
                      interpolation="nearest" if n <= 300 else "antialiased")
    colour_bar = fig.colorbar(image, cax=place_axes(fig, margin + side + 0.2, margin, 0.2, side))
    colour_bar.set_label("share of the true class")
    _matrix_ticks(ax, names, font)
    if n <= MAX_CELL_TEXT:
        _cell_text(ax, matrix, share, font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "Confusion matrix (summed over folds)", fontsize=10)
    return _plot_common.save_png(fig, path)


def _matrix_ticks(ax, names: list, font: float) -> None:
    n = len(names)
    step = 1 if n <= MAX_TICK_LABELS else math.ceil(n / 40)
    ticks = np.arange(0, n, step)
    labels = [names[i] for i in ticks]
    ax.set_xticks(ticks, labels, rotation=90, fontsize=font)
    ax.set_yticks(ticks, labels, fontsize=font)


def _cell_text(ax, matrix: np.ndarray, share: np.ndarray, font: float) -> None:
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            ax.text(col, row, str(count), ha="center", va="center", fontsize=font,
                    color="white" if share[row, col] > 0.5 else "black")
