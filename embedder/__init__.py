"""Stage one: encoders, distances, losses, mining, sampling, training and the
:class:`TripletEmbedder` (training) and :class:`FrozenEmbedder` (a saved encoder)
scikit-learn transformers, configured by one :class:`TrainingConfig`.

Attributes are imported lazily, so ``import embedder.metrics`` (NumPy only) does not pay
for importing TensorFlow.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "build_encoder": "embedder.encoders",
    "available_encoders": "embedder.encoders",
    "register_encoder": "embedder.encoders",
    "pairwise_distances": "embedder.distances",
    "retrieval_scores": "embedder.metrics",
    "load_dataset": "embedder.data",
    "PKSampler": "embedder.sampling",
    "TripletEmbedder": "embedder.estimator",
    "FrozenEmbedder": "embedder.frozen",
    "TrainingConfig": "embedder.config",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'embedder' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
