"""The training-curve PNG: loss and validation retrieval per epoch, one line per encoder.

A frozen encoder (no ``"loss"`` history) or a run without validation gets a note saying
so instead of empty axes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from pipelines.plots import common as _plot_common
from pipelines.plots.common import new_figure, place_axes, text_panel


def plot_training_curves(histories: Sequence[Mapping[str, Sequence[float]]], path, *,
                         validation_note: str | None = None) -> str:
    """Plot loss and validation MAP@R / P@1 per epoch, one line per trained encoder.

    When no history has a ``"loss"`` entry (a frozen encoder, trained elsewhere), the PNG
    says so instead of showing empty axes; when no validation metric was recorded, the
    right panel says why (``validation_note``).

    Parameters
    ----------
    histories : sequence of dict
        Keras-style histories (name -> list of per-epoch values), e.g. one per fold.
    path : str or Path
        PNG file to write (atomically).
    validation_note : str or None, optional
        Why there is no validation curve and what that meant, e.g. the report's
        ``validation`` sentence ("validation skipped: 8 images per class ..."). Shown in
        the validation panel when no history has validation metrics. None: a generic
        note.

    Returns
    -------
    str
        The written path.
    """
    trained = [h for h in histories if h and len(h.get("loss") or []) > 0]
    if not trained:
        fig = new_figure(6.5, 2.5)
        text_panel(place_axes(fig, 0.2, 0.2, 6.1, 2.1),
                   "No training curves: the encoder was not trained during this evaluation "
                   "(a frozen, previously saved encoder).", fontsize=11)
        return _plot_common.save_png(fig, path)
    fig = new_figure(11.0, 4.2)
    ax_loss, ax_val = place_axes(fig, 0.7, 0.6, 4.4, 3.2), place_axes(fig, 6.1, 0.6, 4.4, 3.2)
    has_val = False
    for i, hist in enumerate(trained):
        label = f"fold {i + 1}" if len(trained) > 1 else "encoder"
        colour = f"C{i % 10}"
        epochs = np.arange(1, len(hist["loss"]) + 1)
        ax_loss.plot(epochs, _floats(hist["loss"]), color=colour, label=label, marker=".")
        if hist.get("val_loss"):
            ax_loss.plot(epochs[: len(hist["val_loss"])], _floats(hist["val_loss"]),
                         color=colour, linestyle="--")
        for key, style in (("val_map_at_r", "-"), ("val_precision_at_1", ":")):
            values = hist.get(key) or []
            if len(values):
                has_val = True
                ax_val.plot(np.arange(1, len(values) + 1), _floats(values), color=colour,
                            linestyle=style, marker=".",
                            label=label if key == "val_map_at_r" else None)
    _style_curves(ax_loss, ax_val, has_val, validation_note, len(trained))
    return _plot_common.save_png(fig, path)


def _style_curves(ax_loss, ax_val, has_val: bool, note: str | None, n_lines: int) -> None:

    for ax in (ax_loss, ax_val):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set_title("Training loss (dashed: validation)", fontsize=10)
    ax_loss.set_xlabel("epoch")
    ax_loss.legend(fontsize="small", ncols=1 + n_lines // 6)
    if has_val:
        ax_val.set_xlabel("epoch")
        ax_val.set_title("Validation retrieval (solid: MAP@R, dotted: P@1)", fontsize=10)
        ax_val.set_ylim(0.0, 1.02)
        ax_val.legend(fontsize="small", ncols=1 + n_lines // 6)
        return
    ax_val.set_title("No validation curves", fontsize=10)
    text_panel(ax_val, note or "No validation metrics recorded: validation was off "
               "(validation_fraction=0) or its split was skipped, so there was no early "
               "stopping and the last epoch's weights were kept.")


def _floats(values) -> np.ndarray:
    # JSON round trips store NaN as None; matplotlib wants NaN to leave a gap.
    return np.asarray([np.nan if v is None else v for v in values], dtype=float)
