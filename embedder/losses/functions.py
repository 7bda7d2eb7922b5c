"""Triplet and contrastive losses with in-batch mining, as functions and Keras losses.

Every function takes ``(labels, embeddings)`` of one batch (labels (B,) or (B, 1), integer
or string-encoded integer; embeddings (B, D) of any float dtype), computes in float32 and
returns a scalar. Let ``d`` be the chosen distance (see :mod:`embedder.distances`); a
triplet ``(a, p, n)`` is valid when ``a != p``, ``y_a == y_p`` and ``y_n != y_a``. A batch
without anything valid gives a loss of 0, never NaN. Values and gradients are finite for
every finite input; non-finite embeddings raise (see :mod:`embedder.distances`).

Each in-batch loss is a ratio ``sum / count`` over its terms (hinges, anchors, pairs): a
``*_terms`` function computes both from a :class:`embedder.losses.mining.BatchView`, so
:class:`embedder.training.InBatchTrainer` derives the loss and its diagnostics from one
distance matrix, and ``cross_replica=True`` divides each replica's sum by the count of the
whole global batch.

``cross_replica=True`` (under a ``tf.distribute`` strategy with several replicas): the
embeddings and labels of every replica are all-gathered, the local anchors are scored
against the global batch, and each replica returns ``n_replicas * (its anchors' share of
the global loss)``, so that the mean over replicas is the global-batch loss, and Keras's
scaling of the loss by ``1 / n_replicas`` followed by its sum of the replicas' gradients
gives the gradient of the global-batch loss. Outside such a context it changes nothing.

Each loss is registered in :data:`embedder.losses.registry.LOSSES` (its function, its
``*_terms``, its default margin and its description); the Keras ``Loss`` objects come from
the one wrapper in :mod:`embedder.losses.keras_losses`.
"""

from typing import Any, NamedTuple

from keras import ops

from embedder.distances import check_distance, paired_distances
from embedder.losses.mining import (
    batch_all_stats,
    batch_view,
    check_flag,
    check_margin,
    hardest_negative,
    hardest_positive,
    semi_hard_negative,
)


class LossTerms(NamedTuple):
    """What an in-batch loss computes from a :class:`~embedder.losses.mining.BatchView`.

    The loss is ``total / count`` (0 when ``count`` is 0), reduced over the global batch
    by :func:`reduce_terms`; ``batch_all`` optionally carries the batch-all hinge
    statistics ``(hinge_sum, n_active, n_valid)`` when the loss computed them anyway.
    """

    total: Any
    count: Any
    batch_all: Any = None

    def reduce(self, context=None):
        """The loss: :func:`reduce_terms` of ``total`` and ``count`` under ``context``."""
        return reduce_terms(self.total, self.count, context)


def count_true(mask):
    """Number of True entries of ``mask``, float32."""
    return ops.sum(ops.cast(mask, "float32"))


def batch_all_terms(view, margin):
    """``LossTerms(hinge_sum, n_active, (hinge_sum, n_active, n_valid))`` of batch-all.

    The third item lets the trainer's active-triplet fraction reuse the hinges.
    ``view.top_k``: see :func:`embedder.losses.mining.batch_all_stats` (not under XLA).
    """
    stats = batch_all_stats(view.distances, view.positives, view.negatives, margin,
                            view.top_k)
    return LossTerms(stats[0], stats[1], stats)


def batch_hard_terms(view, margin, soft=False):
    """``(sum of l_a, number of anchors with a positive and a negative)``."""
    gap = hardest_positive(view.distances, view.positives) - hardest_negative(
        view.distances, view.negatives
    )
    # softplus is computed stably (no overflow of exp for large gaps); no margin with it.
    per_anchor = ops.softplus(gap) if soft else ops.relu(gap + margin)
    valid = ops.logical_and(ops.any(view.positives, axis=1), ops.any(view.negatives, axis=1))
    return LossTerms(ops.sum(ops.where(valid, per_anchor, 0.0)), count_true(valid))


def semi_hard_terms(view, margin):
    """``(sum of hinges, number of (a, p) pairs whose anchor has a negative)``."""
    d = view.distances
    hinge = ops.relu(d - semi_hard_negative(d, view.negatives) + margin)
    valid = ops.logical_and(view.positives, ops.any(view.negatives, axis=1)[:, None])
    return LossTerms(ops.sum(ops.where(valid, hinge, 0.0)), count_true(valid))


def contrastive_terms(view, margin):
    """``(half the sum of pair terms, number of pairs i != j)``."""
    d = view.distances
    terms = ops.where(
        view.positives,
        ops.square(d),
        ops.where(view.negatives, ops.square(ops.relu(margin - d)), 0.0),
    )
    pairs = ops.logical_or(view.positives, view.negatives)
    return LossTerms(0.5 * ops.sum(terms), count_true(pairs))


def reduce_terms(total, count, context=None):
    """``total / count`` (0 when ``count`` is 0), over the global batch under ``context``.

    With a replica context, ``count`` is summed over the replicas and the result is
    ``n_replicas * total / global count`` (see the module notes on ``cross_replica``).
    """
    if context is None:
        return ops.where(count > 0, total / ops.maximum(count, 1.0), 0.0)
    import tensorflow as tf

    count = context.all_reduce(tf.distribute.ReduceOp.SUM, ops.stop_gradient(count))
    share = ops.where(count > 0, total / ops.maximum(count, 1.0), 0.0)
    return share * float(context.num_replicas_in_sync)


def loss_view(labels, embeddings, margin, distance, cross_replica):
    """The checked settings' :class:`~embedder.losses.mining.BatchView` of a batch.

    ``margin`` None is not checked (a loss without a margin, or one that checks its own).
    """
    if margin is not None:
        check_margin(margin)
    check_distance(distance)
    return batch_view(labels, embeddings, distance, check_flag(cross_replica, "cross_replica"))


def batch_all_triplet_loss(
    labels, embeddings, margin=0.2, distance="euclidean", *, cross_replica=False
):
    """Batch-all triplet loss, averaged over the triplets that still violate the margin.

    .. math:: L = \\frac{\\sum_{(a,p,n)\\ valid} l_{apn}}{\\#\\{l_{apn} > 10^{-16}\\}},
              \\quad l_{apn} = \\max(d_{ap} - d_{an} + m, 0)

    and 0 when no hinge is positive (Hermans, Beyer & Leibe 2017, "In Defense of the
    Triplet Loss for Person Re-Identification", batch all). The (B, B, B) hinges are
    computed over chunks of anchors (:data:`embedder.losses.mining.BATCH_ALL_CHUNK_ELEMENTS`).

    Parameters
    ----------
    labels : array-like of shape (B,) or (B, 1)
        Integer or string-encoded integer class ids.
    embeddings : array-like of shape (B, D)
        Any float dtype; computed in float32.
    margin : float, default=0.2
        Hinge margin between positive and negative distances.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Distance between embeddings: euclidean (zero gradient at zero distance),
        squared euclidean, or 1 - cosine similarity.
    cross_replica : bool, default=False
        Mine over the batch all-gathered from every replica (see the module notes).

    Returns
    -------
    float32 scalar tensor
    """
    view = loss_view(labels, embeddings, margin, distance, cross_replica)
    return batch_all_terms(view, margin).reduce(view.context)


def batch_hard_triplet_loss(
    labels, embeddings, margin=0.2, distance="euclidean", soft=False, *, cross_replica=False
):
    """Batch-hard triplet loss (Hermans, Beyer & Leibe 2017).

    For each anchor with at least one positive and one negative,

    .. math:: l_a = \\max(\\max_p d_{ap} - \\min_n d_{an} + m, 0)

    or, with ``soft=True`` (the paper's soft margin, as in TF-Addons),
    :math:`l_a = \\log(1 + \\exp(\\max_p d_{ap} - \\min_n d_{an}))`: the margin is not
    used then (ignored, not an error). The loss is the mean of :math:`l_a` over those
    anchors, 0 when there is none.

    Parameters
    ----------
    labels : array-like of shape (B,) or (B, 1)
        Integer or string-encoded integer class ids.
    embeddings : array-like of shape (B, D)
        Any float dtype; computed in float32.
    margin : float, default=0.2
        Ignored when ``soft=True``.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Distance between embeddings: euclidean (zero gradient at zero distance),
        squared euclidean, or 1 - cosine similarity.
    soft : bool, default=False
        Soft margin: log1p(exp(d_ap - d_an)) instead of the hinge; the margin is not used.
    cross_replica : bool, default=False
        Mine over the batch all-gathered from every replica (see the module notes).

    Returns
    -------
    float32 scalar tensor
    """
    check_flag(soft, "soft")
    view = loss_view(labels, embeddings, margin, distance, cross_replica)
    return batch_hard_terms(view, margin, soft).reduce(view.context)


def semi_hard_triplet_loss(
    labels, embeddings, margin=0.2, distance="euclidean", *, cross_replica=False
):
    """Semi-hard triplet loss (Schroff, Kalenichenko & Philbin 2015, FaceNet).

    For each valid pair (a, p) whose anchor has a negative, :math:`d_{an^*}` is the
    smallest :math:`d_{an} > d_{ap}`, or the largest :math:`d_{an}` when there is none
    (TF-Addons semantics);

    .. math:: L = \\operatorname{mean}_{(a,p)} \\max(d_{ap} - d_{an^*} + m, 0)

    and 0 when there is no such pair. O(B^2) memory.

    Parameters
    ----------
    labels : array-like of shape (B,) or (B, 1)
        Integer or string-encoded integer class ids.
    embeddings : array-like of shape (B, D)
        Any float dtype; computed in float32.
    margin : float, default=0.2
        Hinge margin between positive and negative distances.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Distance between embeddings: euclidean (zero gradient at zero distance),
        squared euclidean, or 1 - cosine similarity.
    cross_replica : bool, default=False
        Mine over the batch all-gathered from every replica (see the module notes).

    Returns
    -------
    float32 scalar tensor
    """
    view = loss_view(labels, embeddings, margin, distance, cross_replica)
    return semi_hard_terms(view, margin).reduce(view.context)


def contrastive_loss(labels, embeddings, margin=0.5, distance="euclidean", *, cross_replica=False):
    """Contrastive loss over all pairs ``i != j`` (Hadsell, Chopra & LeCun 2006).

    .. math:: L = \\tfrac12 \\operatorname{mean}_{i \\neq j}
              \\left(s_{ij} d_{ij}^2 + (1 - s_{ij}) \\max(m - d_{ij}, 0)^2\\right)

    with :math:`s_{ij} = [y_i = y_j]`; 0 for a batch of one.

    Parameters
    ----------
    labels : array-like of shape (B,) or (B, 1)
        Integer or string-encoded integer class ids.
    embeddings : array-like of shape (B, D)
        Any float dtype; computed in float32.
    margin : float, default=0.5
        Hinge margin between positive and negative distances.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Distance between embeddings: euclidean (zero gradient at zero distance),
        squared euclidean, or 1 - cosine similarity.
    cross_replica : bool, default=False
        Mine over the batch all-gathered from every replica (see the module notes).

    Returns
    -------
    float32 scalar tensor
    """
    view = loss_view(labels, embeddings, margin, distance, cross_replica)
    return contrastive_terms(view, margin).reduce(view.context)


def triplet_hinges(anchor, positive, negative, margin, distance):
    """Per-triplet hinges ``max(d(a, p) - d(a, n) + margin, 0)`` of (B, D) triplets."""
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
    hinges = triplet_hinges(anchor, positive, negative, margin, distance)
    n = ops.cast(ops.shape(hinges)[0], "float32")
    return ops.sum(hinges) / ops.maximum(n, 1.0)
