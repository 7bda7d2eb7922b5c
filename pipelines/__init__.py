"""Pipelines, cross-validated reports, persistence and the ``triplet`` CLI.

Attributes are imported lazily: ``pipelines.load_pipeline`` of a head-only file works in a
process where TensorFlow is not importable.
"""

from importlib import import_module

_LAZY = {
    "make_triplet_pipeline": "pipelines.factory",
    "save_pipeline": "pipelines.persistence",
    "load_pipeline": "pipelines.persistence",
    "cross_validate_report": "pipelines.report",
    "Report": "pipelines.report",
    "open_set_report": "pipelines.open_set",
    "OpenSetReport": "pipelines.open_set",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
