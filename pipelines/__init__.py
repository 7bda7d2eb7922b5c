"""Pipelines, cross-validated reports, persistence and the ``triplet`` CLI.

Sub-packages: :mod:`pipelines.report`, :mod:`pipelines.plots`, :mod:`pipelines.persistence`,
:mod:`pipelines.cli`. Attributes are imported lazily: ``pipelines.load_pipeline`` of a
head-only file works in a process where TensorFlow is not importable.
"""

from embedder.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "make_triplet_pipeline": "pipelines.factory",
    "save_pipeline": "pipelines.persistence.pipeline_files",
    "load_pipeline": "pipelines.persistence.pipeline_files",
    "cross_validate_report": "pipelines.report.cross_validation",
    "Report": "pipelines.report.records",
    "open_set_report": "pipelines.report.open_set",
    "OpenSetReport": "pipelines.report.open_set_records",
})
