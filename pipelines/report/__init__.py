"""Cross-validated and open-set reports: the fold engine, the typed records, their text.

- :mod:`~pipelines.report.cross_validation`: :func:`cross_validate_report`,
  :func:`refit_plan`;
- :mod:`~pipelines.report.open_set`: :func:`open_set_report` (folds hide whole classes),
  :func:`rejecting_head`;
- :mod:`~pipelines.report.folds`: the one fold engine (:func:`run_folds`, joblib) and one
  fold's work;
- :mod:`~pipelines.report.records`, :mod:`~pipelines.report.open_set_records`: the typed
  records (:class:`Report`, :class:`OpenSetReport`) with JSON, Markdown and ``save``;
- :mod:`~pipelines.report.markdown`: the Markdown and the one-screen summary;
- :mod:`~pipelines.report.html`: one self-contained HTML page per report
  (:func:`report_html`, :func:`open_set_html`).

May import :mod:`pipelines.plots`, :mod:`pipelines.text`, :mod:`classifiers` and the
NumPy-only parts of :mod:`embedder`.
"""

from pipelines.report.cross_validation import (
    cross_validate_report,
    refit_plan,
    report_progress,
)
from pipelines.report.html import open_set_html, report_html
from pipelines.report.open_set import hidden_class_folds, open_set_report, rejecting_head
from pipelines.report.open_set_records import OpenSetReport
from pipelines.report.records import (
    CVInfo,
    EmbedderInfo,
    FoldRecord,
    HeadResult,
    Report,
    RetrievalResult,
)

__all__ = [
    "CVInfo", "EmbedderInfo", "FoldRecord", "HeadResult", "OpenSetReport", "Report",
    "RetrievalResult", "cross_validate_report", "hidden_class_folds", "open_set_html",
    "open_set_report", "refit_plan", "rejecting_head", "report_html", "report_progress",
]
