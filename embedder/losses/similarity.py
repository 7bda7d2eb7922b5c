"""Similarity-based in-batch losses: multi-similarity, supervised contrastive and circle.

These losses score pairs by the **cosine similarity** ``s_ij`` of the embeddings, whatever
the ``distance`` setting: ``distance`` only chooses the matrix that the training
diagnostics (and a triplet loss) use. Each ``*_terms`` function reads the anchors and the
candidates of a :class:`~embedder.losses.mining.BatchView` (the batch, the batch gathered
from every replica, or the batch plus a cross-batch memory) and returns a sum over anchors
and their count; an anchor without the pairs its loss needs is left out, and a batch with
no such anchor gives 0. Values and gradients are finite for every finite input (the
log-sum-exps are shifted by their maximum; masked entries use finite fill values).
"""

from keras import ops

from embedder.distances import cross_distances
from embedder.losses.functions import LossTerms, count_true, loss_view

#: Fill value of masked logits: exp() of it is 0 in float32 and its gradient is finite.
_MASKED = -1e9


def cosine_similarities(view):
    """(A, C) cosine similarity of each anchor of ``view`` with each candidate, float32."""
    if view.candidates is None:
        raise ValueError("the view must carry its candidates (embedder.losses.batch_view)")
    return 1.0 - cross_distances(view.embeddings, view.candidates, "cosine")


def log1p_sum_exp(logits, mask, axis=1):
    """``log(1 + sum(exp(logits)))`` over the entries where ``mask`` is True (0 if none)."""
    masked = ops.where(mask, logits, _MASKED)
    top = ops.maximum(ops.max(masked, axis=axis, keepdims=True), 0.0)
    top = ops.stop_gradient(top)
    total = ops.exp(-top) + ops.sum(ops.where(mask, ops.exp(masked - top), 0.0), axis=axis,
                                    keepdims=True)
    return ops.squeeze(ops.log(total) + top, axis=axis)


def _logsumexp(logits, mask, axis=1):
    masked = ops.where(mask, logits, _MASKED)
    return ops.logsumexp(masked, axis=axis)


def _has(mask):
    return ops.any(mask, axis=1)


def multi_similarity_pairs(similarities, positives, negatives, epsilon):
    """The pairs the multi-similarity miner keeps (Wang et al. 2019, eq. 5 and 6).

    A negative pair ``(a, n)`` is kept when ``s_an + epsilon > min_p s_ap``, a positive
    pair ``(a, p)`` when ``s_ap - epsilon < max_n s_an`` (``p``/``n`` over ``a``'s
    positives/negatives); an anchor without positives keeps no negative and vice versa.

    Returns
    -------
    (mined_positives, mined_negatives) : two boolean (A, C) masks
    """
    s = ops.stop_gradient(similarities)
    hardest_positive = ops.min(ops.where(positives, s, 2.0), axis=1, keepdims=True)
    hardest_negative = ops.max(ops.where(negatives, s, -2.0), axis=1, keepdims=True)
    mined_negatives = ops.logical_and(negatives, s + epsilon > hardest_positive)
    mined_positives = ops.logical_and(positives, s - epsilon < hardest_negative)
    return mined_positives, mined_negatives


def multi_similarity_terms(view, margin=None, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1):
    """``(sum of per-anchor losses, anchors with a positive and a negative)``.

    ``margin`` is not used (the loss has none).
    """
    s = cosine_similarities(view)
    mined_p, mined_n = multi_similarity_pairs(s, view.positives, view.negatives, epsilon)
    per_anchor = (log1p_sum_exp(-alpha * (s - base), mined_p) / alpha
                  + log1p_sum_exp(beta * (s - base), mined_n) / beta)
    valid = ops.logical_and(_has(view.positives), _has(view.negatives))
    return LossTerms(ops.sum(ops.where(valid, per_anchor, 0.0)), count_true(valid))


def supervised_contrastive_terms(view, margin=None, temperature=0.1):
    """``(sum of per-anchor losses, anchors with a positive)``; ``margin`` is not used."""
    logits = cosine_similarities(view) / temperature
    others = ops.logical_or(view.positives, view.negatives)
    log_denominator = _logsumexp(logits, others)
    n_positives = ops.sum(ops.cast(view.positives, "float32"), axis=1)
    positive_logits = ops.sum(ops.where(view.positives, logits, 0.0), axis=1)
    per_anchor = log_denominator - positive_logits / ops.maximum(n_positives, 1.0)
    valid = n_positives > 0
    return LossTerms(ops.sum(ops.where(valid, per_anchor, 0.0)), count_true(valid))


def circle_terms(view, margin=0.4, gamma=80.0):
    """``(sum of per-anchor losses, anchors with a positive and a negative)``."""
    s = cosine_similarities(view)
    # Self-paced weights alpha_p = [1 + m - s]_+, alpha_n = [s + m]_+ (O_p = 1 + m,
    # O_n = -m) and the margins Delta_p = 1 - m, Delta_n = m of Sun et al. (2020).
    positive_logits = -gamma * ops.relu(1.0 + margin - s) * (s - (1.0 - margin))
    negative_logits = gamma * ops.relu(s + margin) * (s - margin)
    per_anchor = ops.softplus(_logsumexp(positive_logits, view.positives)
                              + _logsumexp(negative_logits, view.negatives))
    valid = ops.logical_and(_has(view.positives), _has(view.negatives))
    return LossTerms(ops.sum(ops.where(valid, per_anchor, 0.0)), count_true(valid))


def _check_positive(value, name):
    if ops.is_tensor(value):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return value


def multi_similarity_loss(  # noqa: PLR0913 - the common signature and the paper's four
        labels, embeddings, margin=None, distance="euclidean", alpha=2.0, beta=50.0,
        base=0.5, epsilon=0.1, *, cross_replica=False):
    """Multi-similarity loss with its pair miner (Wang et al. 2019, "Multi-Similarity Loss
    with General Pair Weighting for Deep Metric Learning").

    With cosine similarities ``s``, the mined pairs ``P_a``, ``N_a`` of
    :func:`multi_similarity_pairs` and ``lambda`` = ``base``,

    .. math:: l_a = \\frac{1}{\\alpha} \\log\\Big(1 + \\sum_{p \\in P_a}
              e^{-\\alpha (s_{ap} - \\lambda)}\\Big) + \\frac{1}{\\beta} \\log\\Big(1 +
              \\sum_{n \\in N_a} e^{\\beta (s_{an} - \\lambda)}\\Big)

    averaged over the anchors with at least one positive and one negative.

    Parameters
    ----------
    labels : array-like of shape (B,) or (B, 1)
        Integer or string-encoded integer class ids.
    embeddings : array-like of shape (B, D)
        Any float dtype; computed in float32.
    margin : float or None, default=None
        Not used (the loss has no margin).
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Not used by the loss, which scores cosine similarities.
    alpha : float, default=2.0
        Weight of the positive pairs.
    beta : float, default=50.0
        Weight of the negative pairs.
    base : float, default=0.5
        The similarity ``lambda`` that pairs are pulled above / pushed below.
    epsilon : float, default=0.1
        Slack of the pair miner.
    cross_replica : bool, default=False
        Mine over the batch all-gathered from every replica (see
        :mod:`embedder.losses.functions`).

    Returns
    -------
    float32 scalar tensor
    """
    for value, name in ((alpha, "alpha"), (beta, "beta")):
        _check_positive(value, name)
    view = loss_view(labels, embeddings, None, distance, cross_replica)
    return multi_similarity_terms(view, None, alpha, beta, base, epsilon).reduce(view.context)


def supervised_contrastive_loss(labels, embeddings, margin=None, distance="euclidean",
                                temperature=0.1, *, cross_replica=False):
    """Supervised contrastive loss, NT-Xent with labels (Khosla et al. 2020, "Supervised
    Contrastive Learning", the ``L_out`` form).

    .. math:: l_a = -\\frac{1}{|P_a|} \\sum_{p \\in P_a} \\log
              \\frac{e^{s_{ap} / \\tau}}{\\sum_{c \\neq a} e^{s_{ac} / \\tau}}

    with cosine similarities ``s``, ``P_a`` the other samples of ``a``'s class and ``c``
    every other candidate; averaged over the anchors with at least one positive.

    Parameters
    ----------
    labels : array-like of shape (B,) or (B, 1)
        Integer or string-encoded integer class ids.
    embeddings : array-like of shape (B, D)
        Any float dtype; computed in float32.
    margin : float or None, default=None
        Not used (the loss has no margin).
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Not used by the loss, which scores cosine similarities.
    temperature : float, default=0.1
        The temperature ``tau``.
    cross_replica : bool, default=False
        Mine over the batch all-gathered from every replica.

    Returns
    -------
    float32 scalar tensor
    """
    _check_positive(temperature, "temperature")
    view = loss_view(labels, embeddings, None, distance, cross_replica)
    return supervised_contrastive_terms(view, None, temperature).reduce(view.context)


def circle_loss(labels, embeddings, margin=0.4, distance="euclidean", gamma=80.0, *,
                cross_replica=False):
    """Circle loss with class-level labels (Sun et al. 2020, "Circle Loss: A Unified
    Perspective of Pair Similarity Optimization", eq. 4).

    .. math:: l_a = \\log\\Big(1 + \\sum_{n} e^{\\gamma \\alpha_n (s_{an} - \\Delta_n)}
              \\sum_{p} e^{-\\gamma \\alpha_p (s_{ap} - \\Delta_p)}\\Big)

    with cosine similarities ``s``, :math:`\\alpha_p = [1 + m - s_{ap}]_+`,
    :math:`\\alpha_n = [s_{an} + m]_+`, :math:`\\Delta_p = 1 - m`, :math:`\\Delta_n = m`;
    averaged over the anchors with at least one positive and one negative. The value
    equals ``keras.losses.circle`` on unit-norm embeddings (which it does not normalise).

    Parameters
    ----------
    labels : array-like of shape (B,) or (B, 1)
        Integer or string-encoded integer class ids.
    embeddings : array-like of shape (B, D)
        Any float dtype; computed in float32.
    margin : float, default=0.4
        The relaxation ``m``.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Not used by the loss, which scores cosine similarities.
    gamma : float, default=80.0
        The scale ``gamma``.
    cross_replica : bool, default=False
        Mine over the batch all-gathered from every replica.

    Returns
    -------
    float32 scalar tensor
    """
    _check_positive(gamma, "gamma")
    margin = 0.4 if margin is None else margin
    view = loss_view(labels, embeddings, None, distance, cross_replica)
    return circle_terms(view, margin, gamma).reduce(view.context)
