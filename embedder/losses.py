"""Triplet and contrastive losses with in-batch mining, as functions and Keras losses.

Every function takes ``(labels, embeddings)`` of one batch (labels (B,) or (B, 1), integer
or string-encoded integer; embeddings (B, D) of any float dtype), computes in float32 and
returns a scalar. Let ``d`` be the chosen distance (see :mod:`embedder.distances`); a
triplet ``(a, p, n)`` is valid when ``a != p``, ``y_a == y_p`` and ``y_n != y_a``. A batch
without anything valid gives a loss of 0, never NaN.

The :class:`keras.losses.Loss` subclasses are called by Keras as
``loss(y_true=labels, y_pred=embeddings)``. A batch loss is one number, so ``call`` returns
it repeated once per sample: the default ``"sum_over_batch_size"`` reduction gives back
exactly the batch loss, and Keras's per-replica scaling under ``tf.distribute`` applies
as for any built-in loss (a bare scalar would skip it). Sample weights therefore scale the
loss by their mean.
"""

import keras
from keras import ops

from embedder.distances import check_distance, paired_distances, pairwise_distances
from embedder.mining import (
    batch_all_hinge_stats,
    check_margin,
    hardest_negative_distance,
    hardest_positive_distance,
    negative_mask,
    positive_mask,
    prepare_inputs,
    semi_hard_negative_distance,
)

DEFAULT_MARGINS = {
    "batch_all": 0.2,
    "batch_hard": 0.2,
    "semi_hard": 0.2,
    "contrastive": 0.5,
    "triplet": 0.2,
}


def _masked_mean(values, mask):
    mask = ops.cast(mask, "float32")
    total = ops.sum(values * mask)
    count = ops.sum(mask)
    return ops.where(count > 0, total / ops.maximum(count, 1.0), 0.0)


def _distances(labels, embeddings, margin, distance):
    check_margin(margin)
    check_distance(distance)
    labels, embeddings = prepare_inputs(labels, embeddings)
    return labels, pairwise_distances(embeddings, distance)


def batch_all_fraction_positive(labels, embeddings, margin=0.2, distance="euclidean"):
    """Fraction of valid triplets with a positive hinge, ``#(l > 1e-16) / #valid``.

    ``l = max(d_ap - d_an + margin, 0)``; 0 when the batch has no valid triplet.
    """
    labels, d = _distances(labels, embeddings, margin, distance)
    _, n_positive, n_valid = batch_all_hinge_stats(d, labels, margin)
    return ops.where(n_valid > 0, n_positive / ops.maximum(n_valid, 1.0), 0.0)


def batch_all_triplet_loss(labels, embeddings, margin=0.2, distance="euclidean"):
    """Batch-all triplet loss, averaged over the triplets that still violate the margin.

    .. math:: L = \\frac{\\sum_{(a,p,n)\\ valid} l_{apn}}{\\#\\{l_{apn} > 10^{-16}\\}},
              \\quad l_{apn} = \\max(d_{ap} - d_{an} + m, 0)

    and 0 when no hinge is positive (Hermans, Beyer & Leibe 2017, "In Defense of the
    Triplet Loss for Person Re-Identification", batch all). The (B, B, B) hinges are
    computed over chunks of anchors (:data:`embedder.mining.BATCH_ALL_CHUNK_ELEMENTS`).
    """
    labels, d = _distances(labels, embeddings, margin, distance)
    hinge_sum, n_positive, _ = batch_all_hinge_stats(d, labels, margin)
    return ops.where(n_positive > 0, hinge_sum / ops.maximum(n_positive, 1.0), 0.0)


def batch_hard_triplet_loss(labels, embeddings, margin=0.2, distance="euclidean", soft=False):
    """Batch-hard triplet loss (Hermans, Beyer & Leibe 2017).

    For each anchor with at least one positive and one negative,

    .. math:: l_a = \\max(\\max_p d_{ap} - \\min_n d_{an} + m, 0)

    or, with ``soft=True``, :math:`\\log(1 + \\exp(\\max_p d_{ap} - \\min_n d_{an} + m))`
    (the paper's soft margin is ``margin=0``); the loss is the mean of :math:`l_a` over
    those anchors, 0 when there is none.
    """
    if not isinstance(soft, bool):
        raise TypeError(f"soft must be True or False, got {soft!r}")
    labels, d = _distances(labels, embeddings, margin, distance)
    gap = hardest_positive_distance(d, labels) - hardest_negative_distance(d, labels) + margin
    per_anchor = ops.softplus(gap) if soft else ops.relu(gap)
    valid = ops.logical_and(
        ops.any(positive_mask(labels), axis=1), ops.any(negative_mask(labels), axis=1)
    )
    return _masked_mean(per_anchor, valid)


def semi_hard_triplet_loss(labels, embeddings, margin=0.2, distance="euclidean"):
    """Semi-hard triplet loss (Schroff, Kalenichenko & Philbin 2015, FaceNet).

    For each valid pair (a, p) whose anchor has a negative, :math:`d_{an^*}` is the
    smallest :math:`d_{an} > d_{ap}`, or the largest :math:`d_{an}` when there is none
    (TF-Addons semantics);

    .. math:: L = \\operatorname{mean}_{(a,p)} \\max(d_{ap} - d_{an^*} + m, 0)

    and 0 when there is no such pair. O(B^2) memory.
    """
    labels, d = _distances(labels, embeddings, margin, distance)
    hinge = ops.relu(d - semi_hard_negative_distance(d, labels) + margin)
    has_negative = ops.any(negative_mask(labels), axis=1)
    valid = ops.logical_and(positive_mask(labels), has_negative[:, None])
    return _masked_mean(hinge, valid)


def contrastive_loss(labels, embeddings, margin=0.5, distance="euclidean"):
    """Contrastive loss over all pairs ``i != j`` (Hadsell, Chopra & LeCun 2006).

    .. math:: L = \\tfrac12 \\operatorname{mean}_{i \\neq j}
              \\left(s_{ij} d_{ij}^2 + (1 - s_{ij}) \\max(m - d_{ij}, 0)^2\\right)

    with :math:`s_{ij} = [y_i = y_j]`; 0 for a batch of one.
    """
    labels, d = _distances(labels, embeddings, margin, distance)
    same = ops.cast(positive_mask(labels), "float32")
    different = ops.cast(negative_mask(labels), "float32")
    terms = same * ops.square(d) + different * ops.square(ops.relu(margin - d))
    n = ops.cast(ops.shape(d)[0], "float32")
    return 0.5 * ops.sum(terms) / ops.maximum(n * (n - 1.0), 1.0)


def _triplet_hinges(anchor, positive, negative, margin, distance):
    check_margin(margin)
    check_distance(distance)
    d_ap = paired_distances(anchor, positive, distance)
    d_an = paired_distances(anchor, negative, distance)
    return ops.relu(d_ap - d_an + margin)


def triplet_loss(anchor, positive, negative, margin=0.2, distance="euclidean"):
    """Offline triplet loss over given triplets (Schroff et al. 2015), the seed's form.

    .. math:: L = \\operatorname{mean}_i \\max(d(a_i, p_i) - d(a_i, n_i) + m, 0)

    ``anchor``, ``positive`` and ``negative`` are (B, D); 0 for an empty batch.
    """
    hinges = _triplet_hinges(anchor, positive, negative, margin, distance)
    n = ops.cast(ops.shape(hinges)[0], "float32")
    return ops.sum(hinges) / ops.maximum(n, 1.0)


class _BatchLoss(keras.losses.Loss):
    """Keras wrapper of a batch-level loss function ``fn(labels, embeddings, ...)``."""

    fn = None
    default_name = None

    def __init__(
        self,
        margin=0.2,
        distance="euclidean",
        reduction="sum_over_batch_size",
        name=None,
        dtype=None,
    ):
        super().__init__(name=name or self.default_name, reduction=reduction, dtype=dtype)
        self.margin = check_margin(margin)
        self.distance = check_distance(distance)

    def _settings(self):
        return {"margin": self.margin, "distance": self.distance}

    def call(self, y_true, y_pred):
        loss = type(self).fn(y_true, y_pred, **self._settings())
        # Repeat per sample so that Keras's reductions return the batch loss unchanged.
        return ops.broadcast_to(loss, ops.shape(y_pred)[:1])

    def get_config(self):
        config = super().get_config()
        config.update(dtype=self._dtype_policy.name, **self._settings())
        return config


@keras.saving.register_keras_serializable(package="embedder")
class BatchAllTripletLoss(_BatchLoss):
    """Keras loss for :func:`batch_all_triplet_loss` (y_true: labels, y_pred: embeddings)."""

    fn = staticmethod(batch_all_triplet_loss)
    default_name = "batch_all_triplet_loss"


@keras.saving.register_keras_serializable(package="embedder")
class BatchHardTripletLoss(_BatchLoss):
    """Keras loss for :func:`batch_hard_triplet_loss`; ``soft`` selects the soft margin."""

    fn = staticmethod(batch_hard_triplet_loss)
    default_name = "batch_hard_triplet_loss"

    def __init__(
        self,
        margin=0.2,
        distance="euclidean",
        soft=False,
        reduction="sum_over_batch_size",
        name=None,
        dtype=None,
    ):
        if not isinstance(soft, bool):
            raise TypeError(f"soft must be True or False, got {soft!r}")
        self.soft = soft
        super().__init__(margin, distance, reduction=reduction, name=name, dtype=dtype)

    def _settings(self):
        return {**super()._settings(), "soft": self.soft}


@keras.saving.register_keras_serializable(package="embedder")
class SemiHardTripletLoss(_BatchLoss):
    """Keras loss for :func:`semi_hard_triplet_loss`."""

    fn = staticmethod(semi_hard_triplet_loss)
    default_name = "semi_hard_triplet_loss"


@keras.saving.register_keras_serializable(package="embedder")
class ContrastiveLoss(_BatchLoss):
    """Keras loss for :func:`contrastive_loss` (default margin 0.5)."""

    fn = staticmethod(contrastive_loss)
    default_name = "contrastive_loss"

    def __init__(self, margin=0.5, distance="euclidean", **kwargs):
        super().__init__(margin, distance, **kwargs)


@keras.saving.register_keras_serializable(package="embedder")
class OfflineTripletLoss(_BatchLoss):
    """Keras loss for :func:`triplet_loss` on stacked triplets; ``y_true`` is ignored.

    ``y_pred`` has shape (B, 3, D): the anchor, positive and negative embeddings of each
    triplet, as produced by one shared encoder applied to three inputs. ``call`` returns
    the per-triplet hinges, so the default reduction gives their mean.
    """

    default_name = "triplet_loss"

    def call(self, y_true, y_pred):
        shape = tuple(y_pred.shape)
        if len(shape) != 3 or shape[1] not in (3, None):
            raise ValueError(
                "y_pred must have shape (batch_size, 3, embedding_dim) holding stacked "
                f"(anchor, positive, negative) embeddings, got shape {shape}"
            )
        return _triplet_hinges(y_pred[:, 0], y_pred[:, 1], y_pred[:, 2], self.margin, self.distance)


LOSSES = {
    "batch_all": BatchAllTripletLoss,
    "batch_hard": BatchHardTripletLoss,
    "semi_hard": SemiHardTripletLoss,
    "contrastive": ContrastiveLoss,
    "triplet": OfflineTripletLoss,
}


def _check_name(name):
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return name


def default_margin(name):
    """Default margin of the loss called ``name`` (0.5 for contrastive, else 0.2)."""
    return DEFAULT_MARGINS[_check_name(name)]


def get_loss(name, /, *, margin=None, distance="euclidean", **kwargs):
    """Build the Keras loss called ``name``.

    Parameters
    ----------
    name : {"batch_all", "batch_hard", "semi_hard", "contrastive", "triplet"}
        ``"triplet"`` gives :class:`OfflineTripletLoss`.
    margin : float, optional
        Defaults to :func:`default_margin`.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
    **kwargs
        Passed to the class (``soft`` for batch-hard, ``name``, ``reduction``, ``dtype``);
        ``name`` here is the Keras loss name, as the loss name is positional-only.
    """
    cls = LOSSES[_check_name(name)]
    margin = default_margin(name) if margin is None else margin
    return cls(margin=margin, distance=distance, **kwargs)
