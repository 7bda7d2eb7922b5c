"""The figure primitives every PNG of a report shares: Agg figures, fixed axes, atomic saves.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through
``pyplot``'s global state, so saving a report neither needs a display nor changes the
backend of the caller's session. Axes are placed at fixed positions in inches (no layout
engine that can collapse them and warn). Every PNG is written atomically (temporary file,
fsync, rename) by :func:`save_png`; the plot modules call it through this module, so one
patch of it sees every figure.
"""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipelines.text import natural_key

DPI = 110
MAX_NAME = 18  # characters of a class name shown on an axis or in a legend


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches on an Agg canvas (no pyplot)."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def place_axes(fig: Figure, left: float, bottom: float, width: float, height: float):
    """Axes at a fixed place given in inches from the figure's lower left corner."""
    fw, fh = fig.get_size_inches()
    return fig.add_axes((left / fw, bottom / fh, width / fw, height / fh))


def save_png(fig: Figure, path) -> str:
    """Write ``fig`` as a PNG at ``path``, atomically; returns the path as a string."""
    from embedder.files import atomic_path

    path = Path(path)
    with warnings.catch_warnings():
        # Class names come from folder names; a font without one of their characters
        # draws a box, which is fine, and must not print a warning per glyph.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    return str(path)


def short_name(name, limit: int = MAX_NAME) -> str:
    """``name`` as a string of at most ``limit`` characters (cut with an ellipsis)."""
    name = str(name)
    return name if len(name) <= limit else name[: limit - 1] + "…"


def natural_order(names: Sequence) -> np.ndarray:
    """Indices that put ``names`` in natural order (``s2`` before ``s10``)."""
    return np.asarray(sorted(range(len(names)), key=lambda i: natural_key(names[i])),
                      dtype=int)


def text_panel(ax, text: str, fontsize: float = 10) -> None:
    """Replace the axes ``ax`` by ``text``, wrapped and centred."""
    ax.axis("off")
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(text, 48)), ha="center", va="center",
            fontsize=fontsize, transform=ax.transAxes)
