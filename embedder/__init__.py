"""Stage one: encoders, distances, losses, data, training and the two transformers.

:class:`TripletEmbedder` trains an encoder with a metric-learning loss; :class:`FrozenEmbedder`
wraps a saved one. Sub-packages: :mod:`embedder.losses`, :mod:`embedder.data`,
:mod:`embedder.training`, :mod:`embedder.models`. Attributes are imported lazily, so
``import embedder.metrics`` (NumPy only) does not pay for importing TensorFlow.
"""

from embedder.lazy import lazy_exports

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "build_encoder": "embedder.models.encoders",
    "available_encoders": "embedder.models.encoders",
    "register_encoder": "embedder.models.encoders",
    "export_encoder": "embedder.models.export",
    "pairwise_distances": "embedder.distances",
    "retrieval_scores": "embedder.metrics",
    "load_dataset": "embedder.data.datasets",
    "PKSampler": "embedder.data.sampling",
    "TripletEmbedder": "embedder.estimator",
    "FrozenEmbedder": "embedder.frozen",
    "EmbeddingCache": "embedder.embedding_cache",
    "TrainingConfig": "embedder.training.config",
})
