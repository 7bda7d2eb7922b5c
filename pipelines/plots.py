"""PNG figures of a cross-validated report: confusion matrix, 2-D embedding, training curves.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through
``pyplot``'s global state, so saving a report neither needs a display nor changes the
backend of the caller's session. Every figure stays readable and bounded from 2 to 1,000+
classes: axes are placed at fixed positions in inches (no layout engine that can collapse
them and warn), figure sizes are capped, the confusion matrix is one image (no per-cell
artists above :data:`MAX_CELL_TEXT` classes) and the embedding plot's class key adapts:
a legend up to :data:`MAX_LEGEND` classes, names at the cluster centres up to
:data:`MAX_CENTRE_LABELS`, a colour bar beyond. Measured for ``save_report_figures`` plus
``project_2d`` (5 folds, 2,000 PCA points, one process including imports; 2-core machine
at load average 13): 100 classes 13.5 s wall (figures 3.1 s) and 303 MB peak RSS, 1,000
classes 13.6 s (figures 3.0 s) and 414 MB; issue 12 measured 14.5 s / 1.6 GB at 100
classes and 360 s / 19.7 GB at 500 with the former cell-per-class drawing.

Plot functions take plain arrays and lists; :func:`save_report_figures` adapts a report.
Every PNG is written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import math
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, Normalize, PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipelines._text import natural_key

#: Up to this many classes the confusion matrix shows the count in every cell.
MAX_CELL_TEXT = 30
#: Up to this many classes every row and column of the confusion matrix is labelled.
MAX_TICK_LABELS = 60
#: Up to this many classes the embedding plot has a legend.
MAX_LEGEND = 12
#: Up to this many classes the embedding plot names each class at its cluster centre.
MAX_CENTRE_LABELS = 60
_DPI = 110
_MAX_NAME = 18  # characters of a class name shown on an axis or in a legend


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _axes(fig: Figure, left: float, bottom: float, width: float, height: float):
    """Axes at a fixed place given in inches from the figure's lower left corner."""
    fw, fh = fig.get_size_inches()
    return fig.add_axes((left / fw, bottom / fh, width / fw, height / fh))


def _save(fig: Figure, path) -> str:
    from embedder.files import atomic_path

    path = Path(path)
    with warnings.catch_warnings():
        # Class names come from folder names; a font without one of their characters
        # draws a box, which is fine, and must not print a warning per glyph.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=_DPI)
    return str(path)


def _short(name, limit: int = _MAX_NAME) -> str:
    name = str(name)
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _natural_order(names: Sequence) -> np.ndarray:
    return np.asarray(sorted(range(len(names)), key=lambda i: natural_key(names[i])),
                      dtype=int)


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
    order = _natural_order(class_names)
    matrix = matrix[np.ix_(order, order)]
    names = [_short(class_names[i]) for i in order]
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    labelled = n <= MAX_TICK_LABELS
    font = float(np.clip(11 - n / 8, 5, 9)) if labelled else 6.0
    # Room for the longest tick label (a character is about 0.6 em) and the axis label.
    margin = 0.6 + 0.6 * font / 72 * max((len(s) for s in names), default=1)
    side = float(np.clip(0.3 * n, 3.0, 9.0))
    fig = _figure(margin + side + 1.4, margin + side + 0.7)
    ax = _axes(fig, margin, margin, side, side)
    # A square-root colour scale keeps single confusions visible next to the diagonal.
    image = ax.imshow(share, cmap="Blues", norm=PowerNorm(0.5, vmin=0.0, vmax=1.0),
                      aspect="auto",
                      interpolation="nearest" if n <= 300 else "antialiased")
    colour_bar = fig.colorbar(image, cax=_axes(fig, margin + side + 0.2, margin, 0.2, side))
    colour_bar.set_label("share of the true class")
    _matrix_ticks(ax, names, font)
    if n <= MAX_CELL_TEXT:
        _cell_text(ax, matrix, share, font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "Confusion matrix (summed over folds)", fontsize=10)
    return _save(fig, path)


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


def _class_colours(n: int):
    """(colormap, whether it is qualitative) for ``n`` classes in natural order."""
    if n <= 10:
        return matplotlib.colormaps["tab10"], True
    if n <= 20:
        return matplotlib.colormaps["tab20"], True
    if n <= MAX_CENTRE_LABELS:  # 60 distinct colours; names at the centres tell them apart
        colours = [matplotlib.colormaps[name](i)
                   for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
        return ListedColormap(colours), True
    return matplotlib.colormaps["turbo"], False


def plot_embeddings_2d(points, labels, path, *, title: str = "", tsne=None) -> str:
    """Scatter 2-D projected embeddings, one colour per class, and save it as PNG.

    The class key adapts to the number of classes: a legend up to :data:`MAX_LEGEND`
    classes, class names at the cluster centres (the median point of each class) up to
    :data:`MAX_CENTRE_LABELS`, and beyond that a colour bar over the classes in natural
    order. The figure size does not grow with the number of classes.

    Parameters
    ----------
    points : array-like of float, shape (n, 2)
        2-D coordinates, one row per image.
    labels : array-like, shape (n,)
        Class names (any type; shown with ``str``).
    path : str or Path
        PNG file to write (atomically).
    title : str, optional
        Title of the (first) panel; default "Embeddings (PCA)".
    tsne : tuple or None, optional
        ``(points, labels)`` of a second map (e.g. ``project_2d(...)["tsne"]``), drawn
        beside the first with the same class colours, titled "t-SNE".

    Returns
    -------
    str
        The written path.
    """
    panels = [_panel(points, labels, title or "Embeddings (PCA)")]
    if tsne is not None:
        panels.append(_panel(tsne[0], tsne[1], "t-SNE of the same embeddings\n"
                                               "(clusters; distances not to scale)"))
    classes = sorted({name for _, names, _ in panels for name in names.tolist()},
                     key=natural_key)
    index = {name: i for i, name in enumerate(classes)}
    cmap, qualitative = _class_colours(len(classes))
    key_width = 2.3 if len(classes) <= MAX_LEGEND else (1.3 if not qualitative else 0.2)
    fig = _figure(1.0 + 5.6 * len(panels) + key_width, 5.0)
    for k, (xy, names, panel_title) in enumerate(panels):
        # 0.95 inch on the left: room for tick labels such as -0.75 and the axis title
        ax = _axes(fig, 0.95 + 5.6 * k, 0.6, 4.9, 3.8)
        codes = np.asarray([index[name] for name in names.tolist()], dtype=int)
        colour = cmap(codes % cmap.N) if qualitative else cmap(codes / max(len(classes) - 1, 1))
        size = float(np.clip(20000 / max(len(xy), 1), 3, 14))
        ax.scatter(xy[:, 0], xy[:, 1], s=size, c=colour, alpha=0.75, linewidths=0)
        if MAX_LEGEND < len(classes) <= MAX_CENTRE_LABELS:
            _centre_labels(ax, xy, codes, classes)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("component 1" if k == 0 else "t-SNE 1")
        ax.set_ylabel("component 2" if k == 0 else "t-SNE 2")
    right = 1.0 + 5.6 * len(panels) - 0.5
    if len(classes) <= MAX_LEGEND:
        _legend(fig, classes, cmap, right)
    elif not qualitative:
        _class_colour_bar(fig, cmap, classes, right)
    return _save(fig, path)


def _panel(points, labels, title: str):
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    names = np.asarray([str(v) for v in labels], dtype=object)
    if len(names) != len(points):
        raise ValueError(
            f"labels must have one entry per point ({len(points)}), got {len(names)}")
    return points, names, title


def _centre_labels(ax, xy: np.ndarray, codes: np.ndarray, classes: list) -> None:
    outline = [patheffects.withStroke(linewidth=2.5, foreground="white")]
    for code in np.unique(codes):
        centre = np.median(xy[codes == code], axis=0)
        # Just above the centre, so a tight cluster stays visible under its name.
        ax.annotate(_short(classes[code], 12), centre, xytext=(0, 3),
                    textcoords="offset points", fontsize=7, ha="center", va="bottom",
                    path_effects=outline)


def _legend(fig: Figure, classes: list, cmap, left: float) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", color=cmap(i % cmap.N),
                      label=_short(name)) for i, name in enumerate(classes)]
    fw, fh = fig.get_size_inches()
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(left / fw, 4.4 / fh),
               fontsize="small", title="class", frameon=False)


def _class_colour_bar(fig: Figure, cmap, classes: list, left: float) -> None:
    from matplotlib.cm import ScalarMappable

    n = len(classes)
    norm = Normalize(vmin=0, vmax=max(n - 1, 1))  # as the points: cmap(code / (n - 1))
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap),
                       cax=_axes(fig, left + 0.1, 0.6, 0.2, 3.8))
    ticks = np.unique(np.linspace(0, n - 1, min(n, 8)).round().astype(int))
    bar.set_ticks(ticks, labels=[_short(classes[i], 12) for i in ticks], fontsize=7)
    bar.set_label(f"class ({n}, natural order)")


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
        fig = _figure(6.5, 2.5)
        _note(_axes(fig, 0.2, 0.2, 6.1, 2.1),
              "No training curves: the encoder was not trained during this evaluation "
              "(a frozen, previously saved encoder).", fontsize=11)
        return _save(fig, path)
    fig = _figure(11.0, 4.2)
    ax_loss, ax_val = _axes(fig, 0.7, 0.6, 4.4, 3.2), _axes(fig, 6.1, 0.6, 4.4, 3.2)
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
    return _save(fig, path)


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
    _note(ax_val, note or "No validation metrics recorded: validation was off "
          "(validation_fraction=0) or its split was skipped, so there was no early "
          "stopping and the last epoch's weights were kept.")


def _note(ax, text: str, fontsize: float = 10) -> None:
    ax.axis("off")
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(text, 48)), ha="center", va="center",
            fontsize=fontsize, transform=ax.transAxes)


def _floats(values) -> np.ndarray:
    # JSON round trips store NaN as None; matplotlib wants NaN to leave a gap.
    return np.asarray([np.nan if v is None else v for v in values], dtype=float)


def project_2d(Z, labels, *, source: str, max_points: int = 2000, random_state=0,
               tsne_points: int = 0) -> dict:
    """PCA of (a random sample of at most ``max_points``) embeddings, for the 2-D plot.

    Parameters
    ----------
    Z : array-like of shape (n, dim)
        Embeddings.
    labels : array-like of shape (n,)
        Class label of each row.
    source : str
        Where the embeddings come from, for the title.
    max_points : int, default=2000
        Random sample size (the plot needs no more, and JSON stays small).
    random_state : int, default=0
        Seeds the samples and t-SNE.
    tsne_points : int, default=0
        Also a t-SNE map (scikit-learn's, after PCA to 30 dimensions) of a sample of
        this many of the points, when > 0: it shows clusters that PCA overlaps, at a cost
        of roughly 4 s per 1,000 points on 2 cores (18 s under heavy load), so it is
        off by default.

    Returns
    -------
    dict
        JSON-compatible: ``points`` (n, 2), ``labels``, ``explained_variance_ratio``,
        ``source``, ``title``, and with ``tsne_points`` a ``"tsne"`` entry
        ``{"points", "labels"}``.
    """
    from sklearn.decomposition import PCA

    Z, labels = np.asarray(Z, dtype=np.float64), np.asarray(labels)
    rng = np.random.default_rng(random_state)
    if len(Z) > max_points:
        keep = np.sort(rng.choice(len(Z), max_points, replace=False))
        Z, labels = Z[keep], labels[keep]
    n_comp = min(2, Z.shape[1], len(Z))
    pca = PCA(n_components=n_comp).fit(Z)
    points = np.zeros((len(Z), 2))
    points[:, :n_comp] = pca.transform(Z)
    out = {"points": np.round(points, 5).tolist(), "labels": [str(v) for v in labels],
           "explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
           "source": source, "title": f"Embeddings, PCA\n({source})"}
    if tsne_points > 0 and len(Z) >= 5:
        keep = np.sort(rng.choice(len(Z), min(tsne_points, len(Z)), replace=False))
        out["tsne"] = {"points": np.round(_tsne(Z[keep], random_state), 5).tolist(),
                       "labels": [str(v) for v in labels[keep]]}
    return out


def _tsne(Z: np.ndarray, random_state) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    reduced = PCA(n_components=min(30, *Z.shape), random_state=random_state).fit_transform(Z)
    perplexity = float(min(30.0, (len(Z) - 1) / 3))
    return TSNE(n_components=2, init="pca", perplexity=perplexity, max_iter=500,
                random_state=random_state).fit_transform(reduced)


def _get(report, name: str):
    # Typed reports (pipelines.report.Report) and their to_dict() both work.
    return report[name] if isinstance(report, Mapping) else getattr(report, name)


def _histories(report) -> list:
    if not isinstance(report, Mapping):
        return report.histories
    if report["embedder"].get("frozen"):  # to_dict() has no properties
        return [report["embedder"].get("history") or {}]
    return [fold.get("history") or {} for fold in report["folds"]]


def save_report_figures(report, directory) -> dict:
    """Write the three PNGs of a report.

    Parameters
    ----------
    report : pipelines.report.Report or dict
        The report or its :meth:`~pipelines.report.Report.to_dict`. Read: ``best_head``,
        ``heads[best].confusion_matrix``, ``classes``, ``cv.n_splits``,
        ``embedding_2d``, ``histories`` and ``validation``.
    directory : str or Path
        Where the PNGs are written (atomically).

    Returns
    -------
    dict
        ``"confusion_matrix"`` (of the best head), ``"embeddings_2d"``,
        ``"training_curves"`` -> written path.
    """
    out, best = Path(directory), _get(report, "best_head")
    head, cv = _get(report, "heads")[best], _get(report, "cv")
    proj = _get(report, "embedding_2d")
    tsne = proj.get("tsne")
    return {
        "confusion_matrix": plot_confusion_matrix(
            _get(head, "confusion_matrix"), _get(report, "classes"),
            out / "confusion_matrix.png",
            title=f"{best}: confusion matrix summed over {_get(cv, 'n_splits')} folds"),
        "embeddings_2d": plot_embeddings_2d(
            proj["points"], proj["labels"], out / "embeddings_2d.png", title=proj["title"],
            tsne=(tsne["points"], tsne["labels"]) if tsne else None),
        "training_curves": plot_training_curves(
            _histories(report), out / "training_curves.png",
            validation_note=_get(report, "validation")),
    }
