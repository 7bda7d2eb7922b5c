"""Saving and loading fitted pipelines safely.

- :mod:`~pipelines.persistence.pipeline_files`: :func:`save_pipeline`,
  :func:`load_pipeline` (``.joblib`` + verified sidecar, or ``.skops``);
- :mod:`~pipelines.persistence.sidecar`: the JSON sidecar (versions, sha256, optional HMAC)
  and its verification;
- :mod:`~pipelines.persistence.skops_format`: the ``.skops`` allow-list.

Never imports TensorFlow: a head saved on embeddings loads without it.
"""

from pipelines.persistence.pipeline_files import SKOPS_SUFFIX, load_pipeline, save_pipeline
from pipelines.persistence.sidecar import (
    FORMAT_VERSION,
    SIGNING_KEY_ENV,
    sidecar_metadata,
    sidecar_path,
    verify_against_sidecar,
)
from pipelines.persistence.skops_format import (
    SKOPS_ALLOWED_MODULES,
    skops_allowed_types,
    skops_trusted_types,
)

__all__ = [
    "FORMAT_VERSION", "SIGNING_KEY_ENV", "SKOPS_ALLOWED_MODULES", "SKOPS_SUFFIX",
    "load_pipeline", "save_pipeline", "sidecar_metadata", "sidecar_path",
    "skops_allowed_types", "skops_trusted_types", "verify_against_sidecar",
]
