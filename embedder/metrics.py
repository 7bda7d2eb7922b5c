"""Leave-one-out retrieval metrics of an embedding (NumPy only, no TensorFlow).

The metrics follow Musgrave, Belongie and Lim, "A Metric Learning Reality Check"
(ECCV 2020), as implemented by pytorch-metric-learning's ``AccuracyCalculator`` with the
query set equal to the reference set: every item is a query, the item itself is left
out of its own neighbours, and for a query of label ``y``

* ``R`` is the number of *other* items of label ``y``; queries with ``R = 0`` are excluded;
* precision at 1 is 1 if the nearest neighbour has label ``y``;
* R-precision is ``r / R`` with ``r`` the number of same-label items among the ``R``
  nearest neighbours;
* MAP@R is ``(1/R) sum_{i=1..R} P(i) rel(i)``, with ``rel(i)`` 1 when the ``i``-th
  neighbour has label ``y`` and ``P(i)`` the precision among the first ``i`` neighbours.

The distances are computed in chunks of queries, so only a ``chunk_size x N`` block
and the nearest ``max(k, max R)`` neighbours of each query are ever in memory: no
``N x N`` matrix.
"""

import warnings
from numbers import Integral

import numpy as np

METRICS = ("cosine", "euclidean")
# Distances per block when chunk_size is None: about 200 MB of scratch memory.
_BLOCK_ELEMENTS = 2**24


def _check_inputs(embeddings, labels, k, chunk_size, metric):
    try:
        emb = np.asarray(embeddings, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"embeddings must be a numeric 2-D array, got {exc}") from exc
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (n, dim), got shape {emb.shape}")
    if not np.isfinite(emb).all():
        raise ValueError("embeddings must be finite, got NaN or inf values")
    lab = np.asarray(labels)
    if lab.ndim == 2 and lab.shape[1] == 1:
        lab = lab[:, 0]
    if lab.ndim != 1:
        raise ValueError(f"labels must have shape (n,) or (n, 1), got shape {lab.shape}")
    if len(lab) != len(emb):
        raise ValueError(
            f"labels must have one entry per row of embeddings ({len(emb)}), got {len(lab)}"
        )
    if len(emb) < 2:
        raise ValueError(f"embeddings must have at least 2 rows, got {len(emb)}")
    for name, value in (("k", k), ("chunk_size", 1 if chunk_size is None else chunk_size)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    return emb, lab


def _nearest(dist, n_neighbors, buf32):
    """Indices of the ``n_neighbors`` smallest entries of each row of ``dist``, sorted by
    (distance, index), so that ties are broken deterministically by the lower index.

    ``buf32`` is float32 scratch space of the shape of ``dist``.
    """
    m, n = dist.shape
    # Rounding to float32 is monotone, so the n-th smallest float32 value bounds the n
    # nearest float64 distances, and partitioning float32 is several times faster (SIMD).
    # Any float64 that rounds to at most ``bound`` is below the next float32 after it.
    np.copyto(buf32, dist, casting="same_kind")
    buf32.partition(n_neighbors - 1, axis=1)
    bound = np.nextafter(buf32[:, n_neighbors - 1], np.float32(np.inf)).astype(np.float64)
    rows, cols = np.nonzero(dist <= bound[:, None])  # >= n_neighbors per row, cols ascending
    counts = np.bincount(rows, minlength=m)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    cand = np.full((m, counts.max()), n)  # padding: index n at distance inf, sorts last
    cand[rows, slot] = cols
    cand_dist = np.full(cand.shape, np.inf)
    cand_dist[rows, slot] = dist[rows, cols]
    order = np.argsort(cand_dist, axis=1)  # fast but unstable ...
    sorted_dist = np.take_along_axis(cand_dist, order, axis=1)[:, : n_neighbors + 1]
    # ... so rows with equal distances in reach are re-sorted stably, which keeps the
    # ascending index order of ``cand`` among equal distances.
    tied = (sorted_dist[:, 1:] == sorted_dist[:, :-1]).any(axis=1)
    if tied.any():
        order[tied] = np.argsort(cand_dist[tied], axis=1, kind="stable")
    return np.take_along_axis(cand, order[:, :n_neighbors], axis=1)


def _knn_votes(neighbour_codes):
    """Majority label of each row; among tied labels the one seen first (nearest) wins."""
    counts = (neighbour_codes[:, :, None] == neighbour_codes[:, None, :]).sum(axis=2)
    first_best = np.argmax(counts == counts.max(axis=1, keepdims=True), axis=1)
    return neighbour_codes[np.arange(len(neighbour_codes)), first_best]


def _retrieval_sums(neighbour_codes, query_codes, r):
    """Sums over the queries of P@1, R-precision and MAP@R, from their ranked neighbours.

    ``r`` is each query's number of other items of its class; queries with ``r == 0``
    have nothing to retrieve and are left out.
    """
    keep = r > 0
    rel = neighbour_codes[keep] == query_codes[keep, None]
    r = r[keep]
    n_neighbors = rel.shape[1]
    within_r = np.arange(n_neighbors) < r[:, None]
    precision_at_i = np.cumsum(rel, axis=1) / np.arange(1, n_neighbors + 1)
    return np.array([
        rel[:, 0].sum(),
        ((rel & within_r).sum(axis=1) / r).sum(),
        ((precision_at_i * (rel & within_r)).sum(axis=1) / r).sum(),
    ])


def retrieval_scores(embeddings, labels, *, k=5, chunk_size=None, metric="euclidean"):
    """Leave-one-out retrieval scores (Musgrave et al. 2020) and kNN accuracy.

    Parameters
    ----------
    embeddings : array-like of shape (n, dim)
        Finite embedding vectors, one row per item.
    labels : array-like of shape (n,) or (n, 1)
        Class label of each row (any sortable values).
    k : int, default=5
        Neighbours voting in ``knn_accuracy`` (capped at ``n - 1``).
    chunk_size : int or None, default=None
        Queries per block; scratch memory is about ``13 * chunk_size * n`` bytes. None
        picks ``2**24 // n`` queries (about 200 MB whatever ``n`` is, 279 queries at
        60k items). The scores do not depend on it.
    metric : {"euclidean", "cosine"}, default="euclidean"
        Euclidean distance, or ``1 - cosine similarity`` (all-zero rows have similarity 0
        to everything, as in :func:`sklearn.metrics.pairwise.cosine_distances`).

    Returns
    -------
    dict
        ``precision_at_1``, ``r_precision``, ``map_at_r`` (floats, means over the queries
        whose class has at least one other item; NaN with a warning when there is none),
        ``knn_accuracy`` (float, leave-one-out majority vote of the ``k`` nearest over all
        ``n`` items, ties broken by the nearest neighbour; an item alone in its class
        always counts as wrong) and ``n_queries`` (int, the number of retrieval queries).

    Notes
    -----
    Neighbours are ranked by (distance, index): items at equal distance are taken in
    order of their row index, so the scores are deterministic.
    """
    emb, lab = _check_inputs(embeddings, labels, k, chunk_size, metric)
    n = len(emb)
    _, codes = np.unique(lab, return_inverse=True)
    codes = codes.ravel()
    r_all = np.bincount(codes)[codes] - 1  # R of each query: other items of its class
    k = min(k, n - 1)
    n_neighbors = max(k, int(r_all.max()))

    if metric == "cosine":
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = emb / np.where(norms == 0, 1.0, norms)
    else:
        # Only the ranking matters: scale huge values by a power of two (exact) so that
        # squared distances stay finite, also in float32.
        emb = np.ldexp(emb, -max(0, int(np.frexp(np.abs(emb).max())[1]) - 32))
    sq_norms = np.einsum("ij,ij->i", emb, emb)

    if chunk_size is None:
        chunk_size = max(1, _BLOCK_ELEMENTS // n)
    # Scratch blocks reused by every chunk: fresh big arrays cost page faults each time.
    dist_buf = np.empty((min(chunk_size, n), n))
    buf32 = np.empty(dist_buf.shape, dtype=np.float32)
    sums = np.zeros(3)  # precision_at_1, r_precision, map_at_r
    knn_correct = 0
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        rows = np.arange(stop - start)
        dist = np.matmul(emb[start:stop], emb.T, out=dist_buf[: stop - start])
        if metric == "cosine":
            np.subtract(1.0, dist, out=dist)
        else:  # squared euclidean ranks the same as euclidean, without the sqrt
            dist *= -2.0
            dist += sq_norms[start:stop, None]
            dist += sq_norms[None, :]
            np.maximum(dist, 0.0, out=dist)
        dist[rows, rows + start] = np.inf  # leave the query itself out
        idx = _nearest(dist, n_neighbors, buf32[: stop - start])
        q_codes = codes[start:stop]
        knn_correct += int((_knn_votes(codes[idx[:, :k]]) == q_codes).sum())

        sums += _retrieval_sums(codes[idx], q_codes, r_all[start:stop])

    n_queries = int((r_all > 0).sum())
    if n_queries == 0:
        warnings.warn(
            "labels: no class has 2 or more items, so precision_at_1, r_precision and "
            "map_at_r are undefined (NaN)",
            UserWarning,
            stacklevel=2,
        )
        means = [float("nan")] * 3
    else:
        means = (sums / n_queries).tolist()
    return {
        "precision_at_1": float(means[0]),
        "r_precision": float(means[1]),
        "map_at_r": float(means[2]),
        "knn_accuracy": knn_correct / n,
        "n_queries": n_queries,
    }
