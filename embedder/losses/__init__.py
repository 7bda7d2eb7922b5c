"""Metric-learning losses: distances -> mining -> terms -> reduction, and their registry.

- :mod:`~embedder.losses.mining`: labels, validity masks, the :class:`BatchView` of a batch
  (one distance matrix, gathered across replicas when asked), hardest / semi-hard choices;
- :mod:`~embedder.losses.functions`: the pure ``keras.ops`` loss functions and their
  ``*_terms`` (sum and count from a view), reduced by :func:`reduce_terms`;
- :mod:`~embedder.losses.similarity`: multi-similarity, supervised contrastive and circle
  losses (cosine similarities);
- :mod:`~embedder.losses.proxies`: Proxy-Anchor and (sub-center) ArcFace, with trainable
  class proxies held by the trainer;
- :mod:`~embedder.losses.registry`: :data:`LOSSES`, the one table of losses
  (:class:`LossSpec`: function, terms, default margin, description, own settings);
- :mod:`~embedder.losses.keras_losses`: the Keras ``Loss`` objects (:class:`MetricLoss` and
  the named classes), :func:`get_loss`.

Importing this package registers the built-in losses and their Keras classes.
"""

from embedder.losses.functions import (
    LossTerms,
    batch_all_terms,
    batch_all_triplet_loss,
    batch_hard_terms,
    batch_hard_triplet_loss,
    contrastive_loss,
    contrastive_terms,
    reduce_terms,
    semi_hard_terms,
    semi_hard_triplet_loss,
    triplet_hinges,
    triplet_loss,
)
from embedder.losses.keras_losses import (
    BatchAllTripletLoss,
    BatchHardTripletLoss,
    ContrastiveLoss,
    MetricLoss,
    OfflineTripletLoss,
    SemiHardTripletLoss,
    get_loss,
)
from embedder.losses.mining import BatchView, batch_view, with_memory
from embedder.losses.proxies import (
    arcface_loss,
    arcface_terms,
    proxy_anchor_loss,
    proxy_anchor_terms,
)
from embedder.losses.registry import (
    LOSSES,
    LossSpec,
    default_margin,
    get_spec,
    in_batch_loss,
    loss_names,
    register_loss,
    resolve_params,
    unregister_loss,
)
from embedder.losses.similarity import (
    circle_loss,
    circle_terms,
    multi_similarity_loss,
    multi_similarity_terms,
    supervised_contrastive_loss,
    supervised_contrastive_terms,
)

__all__ = [
    "LOSSES", "BatchAllTripletLoss", "BatchHardTripletLoss", "BatchView", "ContrastiveLoss",
    "LossSpec", "LossTerms", "MetricLoss", "OfflineTripletLoss", "SemiHardTripletLoss",
    "batch_all_terms", "batch_all_triplet_loss", "batch_hard_terms", "batch_hard_triplet_loss",
    "batch_view", "contrastive_loss", "contrastive_terms", "default_margin", "get_loss",
    "get_spec", "in_batch_loss", "loss_names", "reduce_terms", "register_loss",
    "resolve_params", "semi_hard_terms", "semi_hard_triplet_loss", "triplet_hinges",
    "triplet_loss", "unregister_loss", "with_memory", "arcface_loss", "arcface_terms",
    "proxy_anchor_loss", "proxy_anchor_terms", "circle_loss", "circle_terms",
    "multi_similarity_loss", "multi_similarity_terms", "supervised_contrastive_loss",
    "supervised_contrastive_terms",
]
