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


def batch_all_hinges(labels, d, margin):
    """Hinges ``max(d_ap - d_an + margin, 0)`` of every valid triplet, from distances."""
    b = len(labels)
    return np.array([max(d[a, p] - d[a, n] + margin, 0.0)
                     for a in range(b) for p in range(b) for n in range(b)
                     if _valid(labels, a, p, n)])  # fmt: skip


def batch_all(labels, x, margin, name, fraction=False):
    """Batch-all loss (or the fraction of positive hinges with ``fraction=True``)."""
    hinges = batch_all_hinges(labels, pairwise(x, name), margin)
    n_active = int(np.sum(hinges > 1e-16))
    if fraction:
        return n_active / len(hinges) if len(hinges) else 0.0
    return float(hinges.sum()) / n_active if n_active else 0.0


def batch_hard(labels, x, margin, name, soft=False):
    """Batch-hard loss; ``soft=True``: ``log1p(exp(max d_ap - min d_an))``, no margin."""
    d, b, per_anchor = pairwise(x, name), len(labels), []
    for a in range(b):
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


def contrastive(labels, x, margin, name):
    """Contrastive loss: 0.5 * mean over pairs i != j."""
    d, b, terms = pairwise(x, name), len(labels), []
    for i in range(b):
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


LOSSES = {
    "batch_all": batch_all,
    "batch_hard": batch_hard,
    "semi_hard": semi_hard,
    "contrastive": contrastive,
}
