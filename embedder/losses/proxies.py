"""Proxy losses: each class has trainable proxies that the embeddings are scored against.

The proxies are an ``(n_classes * per_class, D)`` matrix: weights of the training model
(:class:`embedder.training.InBatchTrainer` creates them from the loss's registered
``proxy_shape``), never of the saved encoder, so a class first seen at stage two needs
none. Like the similarity losses they score cosine similarities (the ``distance`` setting
only chooses the diagnostics' matrix). They need no positive pair inside the batch, so
they train from P x K batches and from plain shuffled ones alike.
"""

import math

from keras import ops

from embedder.distances import cross_distances
from embedder.losses.functions import LossTerms, loss_view
from embedder.losses.similarity import log1p_sum_exp


def proxy_similarities(embeddings, proxies, per_class=1):
    """(B, n_classes) cosine similarity of each row with each class's (nearest) proxy."""
    s = 1.0 - cross_distances(embeddings, proxies, "cosine")
    if per_class == 1:
        return s
    n_rows = ops.shape(s)[0]
    return ops.max(ops.reshape(s, (n_rows, -1, per_class)), axis=2)


def _one_hot(labels, n_classes):
    return ops.equal(labels[:, None], ops.arange(n_classes)[None, :])


def proxy_anchor_terms(view, margin=0.1, alpha=32.0, *, proxies):
    """``(loss, 1)``: the loss of the whole batch (it does not split over anchors).

    Under a replica context the gathered batch (``view.candidates``) is scored, so every
    replica computes the global loss; :func:`~embedder.losses.reduce_terms` then returns
    it unchanged.
    """
    if view.context is None:
        embeddings, labels = view.embeddings, view.labels
    else:
        embeddings, labels = view.candidates, view.candidate_labels
    s = proxy_similarities(embeddings, proxies)  # (B, C)
    member = _one_hot(labels, ops.shape(s)[1])
    positive = log1p_sum_exp(ops.transpose(-alpha * (s - margin)), ops.transpose(member))
    negative = log1p_sum_exp(ops.transpose(alpha * (s + margin)),
                             ops.transpose(ops.logical_not(member)))
    with_positives = ops.any(member, axis=0)
    n_with = ops.sum(ops.cast(with_positives, "float32"))
    total = (ops.sum(ops.where(with_positives, positive, 0.0)) / ops.maximum(n_with, 1.0)
             + ops.mean(negative))
    return LossTerms(total, ops.ones_like(total))


def arcface_logits(similarities, labels, margin, scale):
    """``scale * cos(theta_y + margin)`` for the true class, ``scale * cos theta`` else.

    Past ``theta_y = pi - margin``, where ``cos(theta + m)`` would turn back up, the
    target logit continues as ``cos theta - m sin m`` (as in Deng et al.'s code).
    """
    c = ops.clip(similarities, -1.0 + 1e-6, 1.0 - 1e-6)
    theta = ops.arccos(c)
    target = ops.where(theta + margin <= math.pi, ops.cos(theta + margin),
                       c - margin * math.sin(margin))
    return scale * ops.where(_one_hot(labels, ops.shape(c)[1]), target, c)


def arcface_terms(view, margin=0.5, scale=64.0, sub_centers=1, *, proxies):
    """``(sum of per-sample cross-entropies, number of samples)``."""
    s = proxy_similarities(view.embeddings, proxies, int(sub_centers))
    logits = arcface_logits(s, view.labels, margin, scale)
    true = ops.sum(ops.where(_one_hot(view.labels, ops.shape(s)[1]), logits, 0.0), axis=1)
    cross_entropy = ops.logsumexp(logits, axis=1) - true
    n = ops.cast(ops.shape(cross_entropy)[0], "float32")
    return LossTerms(ops.sum(cross_entropy), n)


def proxy_anchor_shape(n_classes, dim, alpha=32.0):
    """One proxy per class: ``(n_classes, dim)``."""
    return (int(n_classes), int(dim))


def arcface_shape(n_classes, dim, scale=64.0, sub_centers=1):
    """``sub_centers`` proxies per class: ``(n_classes * sub_centers, dim)``."""
    return (int(n_classes) * int(sub_centers), int(dim))


def proxy_anchor_loss(labels, embeddings, proxies, margin=0.1, distance="euclidean",
                      alpha=32.0, *, cross_replica=False):
    """Proxy-Anchor loss (Kim et al. 2020, "Proxy Anchor Loss for Deep Metric Learning").

    .. math:: L = \\frac{1}{|P^+|} \\sum_{p \\in P^+} \\log\\Big(1 + \\sum_{x \\in X_p^+}
              e^{-\\alpha (s(x, p) - \\delta)}\\Big) + \\frac{1}{|P|} \\sum_{p \\in P}
              \\log\\Big(1 + \\sum_{x \\in X_p^-} e^{\\alpha (s(x, p) + \\delta)}\\Big)

    with cosine similarities ``s``, ``P`` every class's proxy, ``P+`` those with a sample
    in the batch, ``X_p^+`` / ``X_p^-`` the batch's samples of / not of the proxy's class.

    Parameters
    ----------
    labels : array-like of shape (B,) or (B, 1)
        Class ids ``0..n_classes-1``.
    embeddings : array-like of shape (B, D)
        Any float dtype; computed in float32.
    proxies : tensor of shape (n_classes, D)
        One proxy per class (trainable weights of the training model).
    margin : float, default=0.1
        The margin ``delta``.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Not used by the loss, which scores cosine similarities.
    alpha : float, default=32.0
        The scale ``alpha``.
    cross_replica : bool, default=False
        Score the batch all-gathered from every replica.

    Returns
    -------
    float32 scalar tensor
    """
    view = loss_view(labels, embeddings, None, distance, cross_replica)
    terms = proxy_anchor_terms(view, 0.1 if margin is None else margin, alpha, proxies=proxies)
    return terms.reduce(view.context)


def arcface_loss(labels, embeddings, proxies, margin=0.5, distance="euclidean", scale=64.0,
                 sub_centers=1, *, cross_replica=False):
    """(Sub-center) ArcFace loss (Deng et al. 2019, "ArcFace: Additive Angular Margin Loss
    for Deep Face Recognition"; Deng et al. 2020, sub-center ArcFace).

    .. math:: l_i = -\\log \\frac{e^{s \\cos(\\theta_{y_i} + m)}}{e^{s \\cos(\\theta_{y_i}
              + m)} + \\sum_{j \\neq y_i} e^{s \\cos \\theta_j}}

    where :math:`\\cos\\theta_j` is the largest cosine similarity of the row with the
    ``sub_centers`` proxies of class ``j``; the mean over the batch.

    Parameters
    ----------
    labels : array-like of shape (B,) or (B, 1)
        Class ids ``0..n_classes-1``.
    embeddings : array-like of shape (B, D)
        Any float dtype; computed in float32.
    proxies : tensor of shape (n_classes * sub_centers, D)
        The class centres, ``sub_centers`` consecutive rows per class.
    margin : float, default=0.5
        The additive angular margin ``m``, in radians.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Not used by the loss, which scores cosine similarities.
    scale : float, default=64.0
        The scale ``s``.
    sub_centers : int, default=1
        Proxies per class (1: plain ArcFace).
    cross_replica : bool, default=False
        Average over the global batch (the loss is per sample: nothing is gathered).

    Returns
    -------
    float32 scalar tensor
    """
    view = loss_view(labels, embeddings, None, distance, cross_replica)
    terms = arcface_terms(view, 0.5 if margin is None else margin, scale, sub_centers,
                          proxies=proxies)
    return terms.reduce(view.context)
