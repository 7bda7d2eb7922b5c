"""The record of an open-set evaluation: :class:`OpenSetReport`, its Markdown and its histogram.

:func:`pipelines.open_set_report` fills the record; this module only holds and renders
it: strict JSON, a Markdown report (per-fold metrics, hidden classes, warnings, notes)
and the PNG of known vs unknown test scores per fold, every file written atomically.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from pipelines.report.html import open_set_html
from pipelines.text import jsonable, markdown_table

#: The metrics of every fold, in the order of the report.
METRICS = ("auroc", "fpr_at_95_tpr", "open_set_accuracy", "closed_set_accuracy",
           "known_accepted", "unknown_rejected")
_METRIC_TEXT = {
    "auroc": "AUROC (known vs unknown, by score)",
    "fpr_at_95_tpr": "FPR at 95% TPR (unknown accepted)",
    "open_set_accuracy": "open-set accuracy (unknown right when rejected)",
    "closed_set_accuracy": "closed-set accuracy of the head on known test images",
    "known_accepted": "known test images accepted at the calibrated threshold",
    "unknown_rejected": "unknown images rejected at the calibrated threshold",
}


@dataclasses.dataclass
class OpenSetFold:
    """What one open-set fold sends back to the process that aggregates.

    Attributes
    ----------
    index : int
        The fold's position (0-based).
    record : dict
        The fold's row of :attr:`OpenSetReport.folds` (see there).
    scores : dict
        ``known`` and ``unknown`` test scores and the ``threshold`` (for the histogram).
    embedder : dict
        The fold's embedder class and parameters.
    """

    index: int
    record: dict
    scores: dict
    embedder: dict


@dataclasses.dataclass
class OpenSetReport:
    """Result of :func:`pipelines.open_set_report`; every field is JSON-compatible.

    ``folds`` holds one dict per fold: ``unknown_classes`` (the hidden class names),
    ``n_train``, ``n_known_test``, ``n_unknown_test``, ``threshold``,
    ``encoder_saw_unknown`` (hidden images among the encoder's training images, from
    fingerprints; None when unknown) and the :data:`METRICS`; ``mean``/``std`` summarise
    the metrics over the folds; ``scores`` holds each fold's ``known`` and ``unknown``
    test scores and its ``threshold`` (for the histogram).
    """

    score: str
    target_tpr: float
    unknown_label: str
    classes: list[str]
    n_samples: int
    cv: dict
    folds: list[dict]
    mean: dict
    std: dict
    scores: list[dict]
    embedder: dict
    head: str
    warnings: list[str]
    notes: list[str]

    def to_dict(self) -> dict:
        """A deep copy of the report as plain dicts and lists."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The report as strict JSON (non-finite numbers become ``null``)."""
        return json.dumps(jsonable(self.to_dict()), indent=2, allow_nan=False)

    def to_markdown(self, image: str | None = None) -> str:
        """A human-readable report; ``image`` is the relative path of the histogram PNG."""
        rows = [[_METRIC_TEXT[m], *(_num(f[m]) for f in self.folds),
                 f"{_num(self.mean[m])} +- {_num(self.std[m])}"] for m in METRICS]
        header = ["metric", *(f"fold {i + 1}" for i in range(len(self.folds))),
                  "mean +- std"]
        hidden = [[f"fold {i + 1}", ", ".join(f["unknown_classes"]), f["n_train"],
                   f["n_known_test"], f["n_unknown_test"], _num(f["threshold"]),
                   "n/a" if f["encoder_saw_unknown"] is None else f["encoder_saw_unknown"]]
                  for i, f in enumerate(self.folds)]
        parts = [
            "# Open-set report\n",
            f"Score `{self.score}`, threshold calibrated to accept {self.target_tpr:g} of "
            f"held-out known images; rejected images are labelled `{self.unknown_label}`. "
            f"{self.n_samples} images, {len(self.classes)} classes, "
            f"{self.cv['n_splits']} folds hiding {self.cv['unknown_classes']} classes each."
            "\n",
            markdown_table(header, rows),
            "## Hidden classes\n",
            markdown_table(["fold", "unknown classes", "train images", "known test",
                            "unknown test", "threshold", "encoder saw unknown images"],
                           hidden),
        ]
        if image:
            parts.append(f"![open-set scores]({image})\n")
        for title, lines in (("Warnings", self.warnings), ("Notes", self.notes)):
            if lines:
                parts.append(f"## {title}\n\n" + "".join(f"- {t}\n" for t in lines))
        return "\n".join(parts)

    def to_html(self, histogram=None) -> str:
        """The report as one self-contained HTML page.

        Parameters
        ----------
        histogram : str or path-like or None
            The score histogram PNG (as :meth:`save` writes it), embedded as a data URI.

        Returns
        -------
        str
        """
        return open_set_html(self, _METRIC_TEXT, histogram)

    def _repr_html_(self) -> str:
        return open_set_html(self, _METRIC_TEXT, None)  # notebooks: tables only

    def to_frame(self):
        """The metrics as a pandas DataFrame: one row per metric.

        Columns: ``metric`` (the :data:`METRICS`), ``mean``, ``std`` and one column per
        fold (``fold_1``, ...).

        Returns
        -------
        pandas.DataFrame
        """
        import pandas as pd

        n = len(self.folds)
        rows = [[m, self.mean[m], self.std[m], *(f[m] for f in self.folds)] for m in METRICS]
        return pd.DataFrame(rows, columns=["metric", "mean", "std",
                                           *(f"fold_{i + 1}" for i in range(n))])

    def save(self, directory) -> dict:
        """Write ``open_set_report.json``, ``open_set_report.md``, ``open_set_report.html``
        and ``open_set_scores.png`` (score histograms) into ``directory``, atomically.

        Parameters
        ----------
        directory : str or path-like
            Created when missing.

        Returns
        -------
        dict
            ``"json"``, ``"markdown"``, ``"html"``, ``"histogram"`` -> written path.
        """
        from embedder.files import atomic_write_text

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        histogram = plot_score_histograms(self.scores, out / "open_set_scores.png",
                                          score=self.score)
        return {
            "json": str(atomic_write_text(out / "open_set_report.json", self.to_json())),
            "markdown": str(atomic_write_text(out / "open_set_report.md",
                                              self.to_markdown(Path(histogram).name))),
            "html": str(atomic_write_text(out / "open_set_report.html",
                                          self.to_html(histogram))),
            "histogram": histogram,
        }


def _num(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4f}"


def plot_score_histograms(scores, path, *, score="knn_distance") -> str:
    """Histograms of known vs unknown test scores, one panel per fold, saved as PNG.

    Parameters
    ----------
    scores : list of dict
        :attr:`OpenSetReport.scores`: per fold ``known``, ``unknown`` and ``threshold``.
    path : str or path-like
        The PNG to write (atomically).
    score : str, default="knn_distance"
        The score's name, for the axis label.

    Returns
    -------
    str
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from embedder.files import atomic_path

    fig = Figure(figsize=(3.6 * max(1, len(scores)), 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, max(1, len(scores)), squeeze=False)[0])
    for k, (ax, fold) in enumerate(zip(axes, scores, strict=False)):
        values = np.concatenate([fold["known"], fold["unknown"]]).astype(float)
        bins = np.histogram_bin_edges(values if len(values) else [0.0, 1.0], bins=30)
        ax.hist(fold["known"], bins=bins, alpha=0.6, color="C0", label="known")
        ax.hist(fold["unknown"], bins=bins, alpha=0.6, color="C3", label="unknown")
        ax.axvline(fold["threshold"], color="k", linestyle="--", label="threshold")
        ax.set_title(f"fold {k + 1}")
        ax.set_xlabel(f"{score} (higher = more unknown)")
    axes[0].set_ylabel("test images")
    axes[0].legend(fontsize="small")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return str(path)
