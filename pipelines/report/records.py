"""The typed records of a cross-validated report and their JSON/Markdown output.

:class:`Report` and its parts hold strict-JSON values only (built through
:func:`pipelines._text.jsonable`), so :meth:`Report.to_dict` is a fast copy and
:meth:`Report.from_dict` of parsed :meth:`Report.to_json` output gives an equal report.
Import them from :mod:`pipelines.report`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from pipelines.report.html import report_html
from pipelines.report.markdown import (
    MAX_MATRIX_CLASSES,
    METRIC_NAMES,
    report_markdown,
    report_summary,
)
from pipelines.text import jsonable


@dataclasses.dataclass
class FoldRecord:
    """What happened to the encoder in one fold (a field of :class:`pipelines.Report`).

    Attributes
    ----------
    index : int
        0-based fold number.
    n_train, n_test : int
        Images in the training and the test part.
    encoder_fit_time, embed_time : float or None
        Seconds to train the fold's encoder and to embed its test images; ``None`` when
        the encoder was frozen (embedded once, see ``Report.embedder.embed_time``).
    history : dict
        The fold encoder's Keras history (name -> per-epoch list); ``{}`` when frozen.
    validation : dict or None
        The fold encoder's ``validation_`` (``used``, ``reason``, ``n_images``), or
        ``None`` when the embedder does not record one.
    """

    index: int
    n_train: int
    n_test: int
    encoder_fit_time: float | None
    embed_time: float | None
    history: dict
    validation: dict | None


def _build(cls, data, **nested):
    """``cls(**data)`` after checking every field is there; ``nested`` maps a field to
    the function that rebuilds its value."""
    names = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(data, dict):
        raise ValueError(f"report data for {cls.__name__} must be a dict, got "
                         f"{type(data).__name__}")
    missing = [n for n in names if n not in data]
    if missing:
        raise ValueError(f"report data lacks the fields {missing}"
                         + ("" if cls is Report else f" of {cls.__name__}"))
    return cls(**{n: nested[n](data[n]) if n in nested else data[n] for n in names})


@dataclasses.dataclass
class HeadResult:
    """Cross-validated scores of one head; fields: see :mod:`pipelines.report`."""

    estimator: str
    folds: dict
    mean: dict
    std: dict
    confusion_matrix: list
    classification_report: dict

    @classmethod
    def from_dict(cls, data: dict) -> HeadResult:
        """Rebuild from :meth:`Report.to_dict` output."""
        return _build(cls, data)


@dataclasses.dataclass
class RetrievalResult:
    """Leave-one-out retrieval scores of the held-out embeddings, per fold and mean ± std."""

    folds: list
    mean: dict
    std: dict
    k: int | None
    note: str

    @classmethod
    def from_dict(cls, data: dict) -> RetrievalResult:
        """Rebuild from :meth:`Report.to_dict` output."""
        return _build(cls, data)


@dataclasses.dataclass
class CVInfo:
    """The folds: how many, the splitter's ``repr``, the seed and ``n_jobs``."""

    n_splits: int
    splitter: str
    random_state: int | None
    n_jobs: int | None

    @classmethod
    def from_dict(cls, data: dict) -> CVInfo:
        """Rebuild from :meth:`Report.to_dict` output."""
        return _build(cls, data)


@dataclasses.dataclass
class EmbedderInfo:
    """The embedding step: class, parameters, and whether it was frozen.

    ``history``, ``validation`` and ``embed_time`` describe a frozen encoder that embedded
    every image once (``{}``, ``None``, ``None`` when encoders were trained per fold:
    see :attr:`Report.folds`).
    """

    class_name: str
    params: dict
    frozen: bool
    history: dict
    validation: dict | None
    embed_time: float | None

    @classmethod
    def from_dict(cls, data: dict) -> EmbedderInfo:
        """Rebuild from :meth:`Report.to_dict` output."""
        return _build(cls, data)


@dataclasses.dataclass
class Report:
    """Result of :func:`pipelines.report.cross_validate_report`; fields: see
    :mod:`pipelines.report`."""

    heads: dict
    best_head: str
    best_head_rule: str
    classes: list
    n_samples: int
    cv: CVInfo
    refit_encoder: str
    embedder: EmbedderInfo
    folds: list
    retrieval: RetrievalResult
    embedding_2d: dict
    validation: str | None
    warnings: list
    notes: list

    @property
    def histories(self) -> list:
        """Keras histories of the encoders trained for this report (one per fold), or
        of the frozen encoder; ``{}`` entries when nothing was recorded."""
        if self.embedder.frozen:
            return [self.embedder.history]
        return [fold.history for fold in self.folds]

    def to_dict(self) -> dict:
        """A deep copy of the report as plain dicts and lists (strict-JSON values)."""
        return _plain(self)

    def to_json(self) -> str:
        """The report as strict JSON (non-finite numbers become ``null``).

        Indented for reading up to ``MAX_MATRIX_CLASSES`` classes; compact above, where
        the confusion matrices would put millions of numbers on a line each.
        """
        indent = 2 if len(self.classes) <= MAX_MATRIX_CLASSES else None
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=jsonable)

    @classmethod
    def from_dict(cls, data: dict) -> Report:
        """Rebuild a report from :meth:`to_dict` / parsed :meth:`to_json` output."""
        return _build(
            cls, data, cv=CVInfo.from_dict, embedder=EmbedderInfo.from_dict,
            retrieval=RetrievalResult.from_dict,
            heads=lambda h: {n: HeadResult.from_dict(v) for n, v in h.items()},
            folds=lambda fs: [_build(FoldRecord, f) for f in fs])

    def to_markdown(self, images: dict | None = None) -> str:
        """A human-readable report; ``images`` maps figure names to relative PNG paths."""
        return report_markdown(self, images or {})

    def summary(self) -> str:
        """A one-screen plain-text table of the heads side by side."""
        return report_summary(self)

    def to_html(self, figures: dict | None = None) -> str:
        """The report as one self-contained HTML page (see :mod:`pipelines.report.html`).

        Parameters
        ----------
        figures : dict or None
            Figure kind -> PNG path (as :meth:`save` writes them), embedded as data URIs;
            ``None``: tables only.

        Returns
        -------
        str
        """
        return report_html(self, figures)

    def _repr_html_(self) -> str:
        # Notebooks: the tables without figures. Drawing three PNGs on every display would
        # take seconds at 1,000 classes and put megabytes of base64 into the .ipynb;
        # save() writes report.html with the figures.
        return report_html(self, None)

    def to_frame(self):
        """The heads' scores as a pandas DataFrame: one row per head x metric.

        Columns: ``head``, ``metric`` (``accuracy``, ``balanced_accuracy``, ``f1_macro``,
        ``fit_time``, ``predict_time``), ``mean``, ``std`` and one column per fold
        (``fold_1``, ``fold_2``, ...). Long format, so ``frame.pivot(index="metric",
        columns="head", values="mean")`` gives the heads side by side.

        Returns
        -------
        pandas.DataFrame
        """
        import pandas as pd

        n = self.cv.n_splits
        rows = []
        for name, head in self.heads.items():
            for metric in (*METRIC_NAMES, "fit_time", "predict_time"):
                folds = list(head.folds.get(metric, []))
                folds += [None] * (n - len(folds))
                rows.append([name, metric, head.mean.get(metric), head.std.get(metric),
                             *folds[:n]])
        columns = ["head", "metric", "mean", "std", *(f"fold_{i + 1}" for i in range(n))]
        return pd.DataFrame(rows, columns=columns)

    def save(self, directory) -> dict:
        """Write ``report.json``, ``report.md``, ``report.html`` and the PNG figures into
        ``directory``.

        Every file is written atomically (temporary file, fsync, rename).

        Parameters
        ----------
        directory : str or Path
            Created if missing.

        Returns
        -------
        dict
            File kind (``"json"``, ``"markdown"``, ``"html"`` and the figures'
            :func:`pipelines.plots.save_report_figures` kinds) -> written path.
            ``report.html`` needs no other file: the figures are embedded in it.
        """
        from embedder.files import atomic_write_text
        from pipelines.plots.figures import save_report_figures

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = save_report_figures(self, out)
        figures = dict(paths)
        images = {k: Path(v).name for k, v in paths.items()}
        paths["json"] = str(atomic_write_text(out / "report.json", self.to_json()))
        paths["markdown"] = str(atomic_write_text(out / "report.md",
                                                  self.to_markdown(images)))
        paths["html"] = str(atomic_write_text(out / "report.html",
                                              self.to_html(dict(figures))))
        return paths


def _plain(value):
    """``value`` with records turned into dicts; containers copied, leaves shared.

    The records hold strict-JSON values already (built through ``jsonable``), so this is
    a copy, not a conversion: one pass that stays fast on 1,000 x 1,000 confusion
    matrices, where ``dataclasses.asdict`` deep-copies every number.
    """
    if isinstance(value, _RECORDS):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) if isinstance(v, _CONTAINERS) else v for v in value]
    return value


_RECORDS = (Report, HeadResult, RetrievalResult, CVInfo, EmbedderInfo, FoldRecord)
_CONTAINERS = (*_RECORDS, dict, list, tuple)
