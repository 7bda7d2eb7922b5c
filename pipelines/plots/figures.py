"""PNG figures of a cross-validated report: confusion matrix, 2-D embedding, training curves.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through
``pyplot``'s global state, so saving a report neither needs a display nor changes the
backend of the caller's session. Every figure stays readable and bounded from 2 to 1,000+
classes: axes are placed at fixed positions in inches (no layout engine that can collapse
them and warn), figure sizes are capped, the confusion matrix is one image (no per-cell
artists above ``MAX_CELL_TEXT`` classes) and the embedding plot's class key adapts:
a legend up to ``MAX_LEGEND`` classes, names at the cluster centres up to
``MAX_CENTRE_LABELS``, a colour bar beyond (see :mod:`pipelines.plots.embeddings`).

Plot functions take plain arrays and lists; :func:`save_report_figures` adapts a report
and draws its three PNGs, each written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipelines.plots.confusion import plot_confusion_matrix
from pipelines.plots.curves import plot_training_curves
from pipelines.plots.embeddings import plot_embeddings_2d


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
