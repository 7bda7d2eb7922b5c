"""PNG figures of a cross-validated report: confusion matrix, 2-D embedding, training curves.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through
``pyplot``'s global state, so saving a report neither needs a display nor changes the
backend of the caller's session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _new_figure(width: float, height: float, ncols: int = 1):
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig: Figure, path) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return str(path)


def plot_confusion_matrix(matrix, class_names: Sequence[str], path, *, title: str = "") -> str:
    """Draw a confusion matrix (rows: true class, columns: predicted) and save it as PNG.

    Parameters
    ----------
    matrix : array-like of int, shape (n_classes, n_classes)
    class_names : sequence of str, length n_classes
    path : str or Path
        Where the PNG is written.
    title : str, optional

    Returns
    -------
    str
        The written path.
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape != (len(class_names), len(class_names)):
        raise ValueError(
            f"matrix must have shape ({len(class_names)}, {len(class_names)}) to match "
            f"class_names, got {matrix.shape}"
        )
    side = 3.0 + 0.45 * len(class_names)
    fig, ax = _new_figure(side + 1.0, side)
    display = ConfusionMatrixDisplay(matrix, display_labels=[str(c) for c in class_names])
    display.plot(ax=ax, cmap="Blues", colorbar=True, values_format="d")
    ax.set_title(title or "Confusion matrix (summed over folds)")
    return _save(fig, path)


def plot_embeddings_2d(points, labels, path, *, title: str = "") -> str:
    """Scatter 2-D projected embeddings, one colour per class, and save it as PNG.

    Parameters
    ----------
    points : array-like of float, shape (n, 2)
    labels : array-like, shape (n,)
        Class names (any type; shown with ``str``).
    path : str or Path
    title : str, optional

    Returns
    -------
    str
        The written path.
    """
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    labels = np.asarray([str(v) for v in labels])
    if len(labels) != len(points):
        raise ValueError(
            f"labels must have one entry per point ({len(points)}), got {len(labels)}"
        )
    fig, ax = _new_figure(6.5, 5.0)
    classes = sorted(set(labels.tolist()))
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for i, name in enumerate(classes):
        sel = labels == name
        ax.scatter(points[sel, 0], points[sel, 1], s=9, alpha=0.75, color=cmap(i % cmap.N),
                   label=name)
    if classes:
        ax.legend(markerscale=2, fontsize="small", loc="best", title="class")
    ax.set_xlabel("component 1")
    ax.set_ylabel("component 2")
    ax.set_title(title or "Embeddings (PCA)")
    return _save(fig, path)


def plot_training_curves(histories: Sequence[Mapping[str, Sequence[float]]], path) -> str:
    """Plot loss and validation MAP@R / P@1 per epoch, one line per trained encoder.

    When no history has a ``"loss"`` entry (a frozen encoder, trained elsewhere), the PNG
    says so instead of showing empty axes.

    Parameters
    ----------
    histories : sequence of dict
        Keras-style histories (name -> list of per-epoch values), e.g. one per fold.
    path : str or Path

    Returns
    -------
    str
        The written path.
    """
    trained = [h for h in histories if h and len(h.get("loss") or []) > 0]
    if not trained:
        fig, ax = _new_figure(6.5, 2.5)
        ax.axis("off")
        ax.text(0.5, 0.5, "No training curves: the encoder was not trained during this\n"
                "evaluation (a frozen, previously saved encoder).", ha="center",
                va="center", fontsize=11)
        return _save(fig, path)
    fig, (ax_loss, ax_val) = _new_figure(11.0, 4.0, ncols=2)
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
    for ax in (ax_loss, ax_val):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set_title("Training loss (dashed: validation)")
    ax_loss.set_xlabel("epoch")
    ax_loss.legend(fontsize="small")
    ax_val.set_xlabel("epoch")
    if has_val:
        ax_val.set_title("Validation retrieval (solid: MAP@R, dotted: P@1)")
        ax_val.set_ylim(0.0, 1.02)
        ax_val.legend(fontsize="small")
    else:
        ax_val.axis("off")
        ax_val.text(0.5, 0.5, "no validation metrics recorded\n(validation_fraction=0?)",
                    ha="center", va="center")
    return _save(fig, path)


def _floats(values) -> np.ndarray:
    # JSON round trips store NaN as None; matplotlib wants NaN to leave a gap.
    return np.asarray([np.nan if v is None else v for v in values], dtype=float)


def project_2d(Z, labels, *, source: str, max_points: int = 2000, random_state=0) -> dict:
    """PCA of (a random sample of at most ``max_points``) embeddings, for the 2-D plot.

    Returns a JSON-compatible dict: ``points`` (n, 2), ``labels``,
    ``explained_variance_ratio``, ``source`` and ``title``.
    """
    from sklearn.decomposition import PCA

    Z, labels = np.asarray(Z, dtype=np.float64), np.asarray(labels)
    if len(Z) > max_points:
        keep = np.random.default_rng(random_state).choice(len(Z), max_points, replace=False)
        Z, labels = Z[np.sort(keep)], labels[np.sort(keep)]
    n_comp = min(2, Z.shape[1], len(Z))
    pca = PCA(n_components=n_comp).fit(Z)
    points = np.zeros((len(Z), 2))
    points[:, :n_comp] = pca.transform(Z)
    return {"points": np.round(points, 5).tolist(), "labels": [str(v) for v in labels],
            "explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
            "source": source, "title": f"Embeddings, PCA\n({source})"}


def save_report_figures(report: Mapping, directory) -> dict:
    """Write the three PNGs of a report dict (:meth:`pipelines.Report.to_dict`).

    Returns
    -------
    dict
        ``"confusion_matrix"`` (of the best head), ``"embeddings_2d"``,
        ``"training_curves"`` -> written path.
    """
    out, best = Path(directory), report["best_head"]
    proj = report["embedding_2d"]
    return {
        "confusion_matrix": plot_confusion_matrix(
            report["heads"][best]["confusion_matrix"], report["classes"],
            out / "confusion_matrix.png",
            title=f"{best}: confusion matrix summed over {report['cv']['n_splits']} folds",
        ),
        "embeddings_2d": plot_embeddings_2d(proj["points"], proj["labels"],
                                            out / "embeddings_2d.png", title=proj["title"]),
        "training_curves": plot_training_curves(report["histories"],
                                                out / "training_curves.png"),
    }
