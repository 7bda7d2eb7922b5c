"""Brute-force NumPy references (float64, plain loops) for every distance, loss and
training diagnostic of ``embedder``: the one place tests compare the library against.

Each follows the text of DESIGN.md section 3 literally, triplet by triplet, so that a
vectorisation or masking mistake in the library cannot be repeated here.
"""

from __future__ import annotations

import numpy as np


def distance(u, v, name):
    """Distance ``name`` between two vectors, in float64."""
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    if name == "cosine":
        nu, nv = np.linalg.norm(u), np.linalg.norm(v)
        cosine = 0.0 if nu == 0 or nv == 0 else u @ v / (nu * nv)
        return 1.0 - cosine
    squared = np.sum((u - v) ** 2)
    return squared if name == "squared" else np.sqrt(squared)


def pairwise(x, name):
    """(B, B) matrix of :func:`distance`, zero diagonal."""
    n = len(x)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                out[i, j] = distance(x[i], x[j], name)
    return out


def _valid(labels, a, p, n):
    return a != p and labels[a] == labels[p] and labels[n] != labels[a]


def batch_all_hinges(labels, d, margin, n_anchors=None):
    """Hinges ``max(d_ap - d_an + margin, 0)`` of every valid triplet, from distances.

    ``n_anchors``: only the first rows are anchors (the rest are candidates only, e.g. a
    cross-batch memory); None: every row.
    """
    b = len(labels)
    return np.array([max(d[a, p] - d[a, n] + margin, 0.0)
                     for a in range(n_anchors or b) for p in range(b) for n in range(b)
                     if _valid(labels, a, p, n)])  # fmt: skip


def batch_all(labels, x, margin, name, fraction=False, n_anchors=None):
    """Batch-all loss (or the fraction of positive hinges with ``fraction=True``)."""
    hinges = batch_all_hinges(labels, pairwise(x, name), margin, n_anchors)
    n_active = int(np.sum(hinges > 1e-16))
    if fraction:
        return n_active / len(hinges) if len(hinges) else 0.0
    return float(hinges.sum()) / n_active if n_active else 0.0


def batch_hard(labels, x, margin, name, soft=False, n_anchors=None):
    """Batch-hard loss; ``soft=True``: ``log1p(exp(max d_ap - min d_an))``, no margin."""
    d, b, per_anchor = pairwise(x, name), len(labels), []
    for a in range(n_anchors or b):
        pos = [d[a, p] for p in range(b) if p != a and labels[p] == labels[a]]
        neg = [d[a, n] for n in range(b) if labels[n] != labels[a]]
        if pos and neg:
            gap = max(pos) - min(neg)
            per_anchor.append(np.logaddexp(0.0, gap) if soft else max(gap + margin, 0.0))
    return float(np.mean(per_anchor)) if per_anchor else 0.0


def semi_hard_negatives(labels, d):
    """(B, B): smallest ``d_an > d_ap`` over ``a``'s negatives, else the largest; 0 if none."""
    n = len(labels)
    out = np.zeros((n, n))
    for a in range(n):
        neg = [d[a, k] for k in range(n) if labels[k] != labels[a]]
        for p in range(n):
            if neg:
                farther = [v for v in neg if v > d[a, p]]
                out[a, p] = min(farther) if farther else max(neg)
    return out


def semi_hard(labels, x, margin, name):
    """Semi-hard loss (TF-Addons semantics)."""
    d, b = pairwise(x, name), len(labels)
    chosen, hinges = semi_hard_negatives(labels, d), []
    for a in range(b):
        has_negative = any(labels[n] != labels[a] for n in range(b))
        for p in range(b):
            if p != a and labels[p] == labels[a] and has_negative:
                hinges.append(max(d[a, p] - chosen[a, p] + margin, 0.0))
    return float(np.mean(hinges)) if hinges else 0.0


def contrastive(labels, x, margin, name, n_anchors=None):
    """Contrastive loss: 0.5 * mean over pairs i != j."""
    d, b, terms = pairwise(x, name), len(labels), []
    for i in range(n_anchors or b):
        for j in range(b):
            if i != j:
                same = labels[i] == labels[j]
                terms.append(d[i, j] ** 2 if same else max(margin - d[i, j], 0.0) ** 2)
    return 0.5 * float(np.mean(terms)) if terms else 0.0


def offline_triplet(a, p, n, margin, name):
    """Mean over rows of ``max(d(a, p) - d(a, n) + margin, 0)``; 0 for no rows."""
    hinges = [max(distance(a[i], p[i], name) - distance(a[i], n[i], name) + margin, 0.0)
              for i in range(len(a))]  # fmt: skip
    return float(np.mean(hinges)) if hinges else 0.0


def pair_mean(labels, x, name, positive):
    """Mean distance over positive pairs (``a != p``) or negative pairs; None if none."""
    labels = np.asarray(labels)
    d = pairwise(x, name)
    same = labels[:, None] == labels[None]
    mask = (same & ~np.eye(len(labels), dtype=bool)) if positive else ~same
    return float(d[mask].mean()) if mask.any() else None


def norms(x):
    """L2 norm of every row, float64."""
    return np.linalg.norm(np.asarray(x, np.float64), axis=1)


def diagnostics(labels, x, margin, name):
    """The five training diagnostics of one batch (None where there is nothing to measure)."""
    labels = np.asarray(labels)
    hinges = batch_all_hinges(labels, pairwise(x, name), margin)
    return {
        "active_fraction": float(np.mean(hinges > 1e-16)) if len(hinges) else None,
        "pos_distance": pair_mean(labels, x, name, True),
        "neg_distance": pair_mean(labels, x, name, False),
        "norm_mean": float(norms(x).mean()),
        "norm_std": float(norms(x).std()),
    }


def _cosine(u, v):
    return 1.0 - distance(u, v, "cosine")


def _log1p_sum_exp(values):
    # log(1 + sum(exp(v))), literally (float64; the tests' values stay far from overflow)
    return float(np.log1p(np.sum(np.exp(np.asarray(values, np.float64)))))


def _pairs(labels, a, b):
    pos = [p for p in range(b) if p != a and labels[p] == labels[a]]
    neg = [n for n in range(b) if labels[n] != labels[a]]
    return pos, neg


def multi_similarity(  # noqa: PLR0913 - the common signature and the paper's four
        labels, x, margin, name, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1, n_anchors=None):
    """Multi-similarity loss with its miner (Wang et al. 2019, eq. 5, 6 and 8), literally."""
    b, per_anchor = len(labels), []
    for a in range(n_anchors or b):
        pos, neg = _pairs(labels, a, b)
        if not (pos and neg):
            continue
        s_pos = [_cosine(x[a], x[p]) for p in pos]
        s_neg = [_cosine(x[a], x[n]) for n in neg]
        kept_neg = [s for s in s_neg if s + epsilon > min(s_pos)]
        kept_pos = [s for s in s_pos if s - epsilon < max(s_neg)]
        per_anchor.append(
            _log1p_sum_exp([-alpha * (s - base) for s in kept_pos]) / alpha
            + _log1p_sum_exp([beta * (s - base) for s in kept_neg]) / beta)
    return float(np.mean(per_anchor)) if per_anchor else 0.0


def supervised_contrastive(labels, x, margin, name, temperature=0.1, n_anchors=None):
    """Supervised contrastive loss (Khosla et al. 2020, L_out), literally."""
    b, per_anchor = len(labels), []
    for a in range(n_anchors or b):
        pos, _ = _pairs(labels, a, b)
        if not pos:
            continue
        denominator = sum(np.exp(_cosine(x[a], x[c]) / temperature)
                          for c in range(b) if c != a)  # fmt: skip
        per_anchor.append(-np.mean([np.log(np.exp(_cosine(x[a], x[p]) / temperature)
                                           / denominator) for p in pos]))  # fmt: skip
    return float(np.mean(per_anchor)) if per_anchor else 0.0


def circle(labels, x, margin, name, gamma=80.0, n_anchors=None):
    """Circle loss (Sun et al. 2020, eq. 4 with O_p = 1 + m, O_n = -m, Delta_p = 1 - m,
    Delta_n = m), literally."""
    b, per_anchor = len(labels), []
    for a in range(n_anchors or b):
        pos, neg = _pairs(labels, a, b)
        if not (pos and neg):
            continue
        sum_pos = sum(np.exp(-gamma * max(1 + margin - s, 0.0) * (s - (1 - margin)))
                      for s in (_cosine(x[a], x[p]) for p in pos))  # fmt: skip
        sum_neg = sum(np.exp(gamma * max(s + margin, 0.0) * (s - margin))
                      for s in (_cosine(x[a], x[n]) for n in neg))  # fmt: skip
        per_anchor.append(np.log1p(sum_pos * sum_neg))
    return float(np.mean(per_anchor)) if per_anchor else 0.0


def proxy_anchor(labels, x, proxies, margin, alpha=32.0):
    """Proxy-Anchor loss (Kim et al. 2020, eq. 4), literally."""
    with_positives, positive, negative = [], [], []
    for c, proxy in enumerate(proxies):
        members = [i for i in range(len(labels)) if labels[i] == c]
        others = [i for i in range(len(labels)) if labels[i] != c]
        if members:
            with_positives.append(c)
            positive.append(_log1p_sum_exp([-alpha * (_cosine(x[i], proxy) - margin)
                                            for i in members]))  # fmt: skip
        negative.append(_log1p_sum_exp([alpha * (_cosine(x[i], proxy) + margin)
                                        for i in others]))  # fmt: skip
    first = np.mean(positive) if positive else 0.0
    return float(first + np.mean(negative))


def arcface(labels, x, proxies, margin, scale=64.0, sub_centers=1):
    """(Sub-center) ArcFace loss (Deng et al. 2019), literally: the mean cross-entropy of
    ``scale * cos(theta_y + margin)`` (``cos theta - margin * sin margin`` past ``pi``)."""
    n_classes = len(proxies) // sub_centers
    losses = []
    for i, y in enumerate(labels):
        cosines = [max(_cosine(x[i], proxies[c * sub_centers + k]) for k in range(sub_centers))
                   for c in range(n_classes)]  # fmt: skip
        logits = []
        for c, cos in enumerate(cosines):
            theta = np.arccos(np.clip(cos, -1 + 1e-6, 1 - 1e-6))
            if c == y:
                cos = np.cos(theta + margin) if theta + margin <= np.pi else (
                    cos - margin * np.sin(margin))
            logits.append(scale * cos)
        logits = np.asarray(logits)
        top = logits.max()
        losses.append(top + np.log(np.sum(np.exp(logits - top))) - logits[y])
    return float(np.mean(losses))


LOSSES = {
    "batch_all": batch_all,
    "batch_hard": batch_hard,
    "semi_hard": semi_hard,
    "contrastive": contrastive,
    "multi_similarity": multi_similarity,
    "supervised_contrastive": supervised_contrastive,
    "circle": circle,
}
