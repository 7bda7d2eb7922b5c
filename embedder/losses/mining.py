"""Label handling, validity masks and in-batch triplet mining, in ``keras.ops``.

A triplet ``(a, p, n)`` of batch indices is *valid* when ``a != p``, ``y_a == y_p`` and
``y_n != y_a``. The helpers below work on a (B, B) distance matrix (see
:func:`embedder.distances.pairwise_distances`) and use O(B^2) memory; the batch-all
statistics, which need every (a, p, n), are computed over chunks of anchors so that no
more than ``BATCH_ALL_CHUNK_ELEMENTS`` triplets are materialised at once.
"""

import collections
import numbers

import keras
import numpy as np
from keras import ops

from embedder.distances import check_embeddings, cross_distances, pairwise_distances

#: Most (anchor, positive, negative) entries that :func:`batch_all_hinge_stats` holds in
#: memory at once (2**24 float32 values = 64 MiB, plus masks). Batches with
#: ``B**3 <= BATCH_ALL_CHUNK_ELEMENTS`` (B <= 256) are done in one chunk.
BATCH_ALL_CHUNK_ELEMENTS = 2**24


def _labels_to_tensor(labels):
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.is_tensor(labels) and labels.dtype == tf.string:
            return tf.strings.to_number(labels, out_type=tf.int32)
    if not ops.is_tensor(labels):
        array = np.asarray(labels)
        if array.dtype.kind in "USO":
            try:
                array = array.astype(np.int64)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    "labels must be integers or string-encoded integers, "
                    f"got values such as {array.ravel()[:3].tolist()}"
                ) from exc
        labels = array
    labels = ops.convert_to_tensor(labels)
    if labels.dtype != "int32":
        labels = ops.cast(labels, "int32")
    return labels


def prepare_labels(labels):
    """Return ``labels`` as an int32 tensor of shape (B,).

    Accepts shape (B,) or (B, 1); integer, float (as Keras passes ``y_true``) or
    string-encoded integer labels (NumPy str/bytes/object arrays, TensorFlow string tensors).
    """
    labels = _labels_to_tensor(labels)
    shape = tuple(labels.shape)
    if len(shape) == 2 and shape[1] in (1, None):
        labels = ops.reshape(labels, (-1,))
    elif len(shape) != 1:
        raise ValueError(
            f"labels must have shape (batch_size,) or (batch_size, 1), got shape {shape}"
        )
    return labels


def prepare_inputs(labels, embeddings):
    """Validate and convert a batch for the losses.

    Parameters
    ----------
    labels : array-like of shape (B,) or (B, 1)
        Integer or string-encoded integer class ids.
    embeddings : array-like of shape (B, D)
        Any float dtype (float16/bfloat16 under mixed precision).

    Returns
    -------
    labels : int32 tensor of shape (B,)
    embeddings : float32 tensor of shape (B, D)
    """
    embeddings = check_embeddings(embeddings)
    labels = prepare_labels(labels)
    n_rows, n_labels = embeddings.shape[0], labels.shape[0]
    if n_rows is not None and n_labels is not None and n_rows != n_labels:
        raise ValueError(
            f"labels must have one entry per row of embeddings: expected {n_rows} labels "
            f"(embeddings of shape {tuple(embeddings.shape)}), got {n_labels}"
        )
    return labels, embeddings


def _not_eye(n):
    index = ops.arange(n)
    return ops.not_equal(index[:, None], index[None, :])


def positive_mask(labels):
    """(B, B) boolean mask of valid (anchor, positive) pairs: ``a != p`` and ``y_a == y_p``."""
    labels = prepare_labels(labels)
    same = ops.equal(labels[:, None], labels[None, :])
    return ops.logical_and(same, _not_eye(ops.shape(labels)[0]))


def negative_mask(labels):
    """(B, B) boolean mask of valid (anchor, negative) pairs: ``y_a != y_n``."""
    labels = prepare_labels(labels)
    return ops.not_equal(labels[:, None], labels[None, :])


def _fill_value(distances):
    # A value above every distance: masked-out entries never win a min, and stay finite.
    return ops.stop_gradient(ops.max(distances)) + 1.0


# The private helpers below take an (anchors x candidates) distance matrix and its boolean
# positive/negative masks, so that one matrix per step serves the loss and the training
# diagnostics, and anchors can be scored against a batch gathered from all replicas.


def hardest_positive(distances, positives):
    """Largest ``d_ap`` over each anchor's positives (boolean mask), shape (A,); 0 if none."""
    return ops.max(ops.where(positives, distances, 0.0), axis=1)


def hardest_negative(distances, negatives):
    """Smallest ``d_an`` over each anchor's negatives (boolean mask), shape (A,); 0 if none."""
    hardest = ops.min(ops.where(negatives, distances, _fill_value(distances)), axis=1)
    return ops.where(ops.any(negatives, axis=1), hardest, 0.0)


def hardest_positive_distance(distances, labels):
    """Largest ``d_ap`` over the positives of each anchor, shape (B,); 0 where none."""
    return hardest_positive(distances, positive_mask(labels))


def hardest_negative_distance(distances, labels):
    """Smallest ``d_an`` over the negatives of each anchor, shape (B,); 0 where none."""
    return hardest_negative(distances, negative_mask(labels))


def _count_not_greater(sorted_rows, values):
    # Row-wise searchsorted(side="right"): how many entries of each sorted row are <= each
    # value of the same row of ``values``. TensorFlow's op is batched natively (and about
    # 5x faster eagerly than vectorising keras.ops.searchsorted, which is 1-D only).
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.searchsorted(sorted_rows, values, side="right", out_type=tf.int32)
    counts = ops.vectorized_map(
        lambda row: ops.searchsorted(row[0], row[1], side="right"), (sorted_rows, values)
    )
    return ops.cast(counts, "int32")


def semi_hard_negative(distances, negatives):
    """Semi-hard negative distance for every (anchor, candidate) entry, shape (A, C).

    Entry ``[a, p]`` is the smallest ``d_an > d_ap`` over the negatives of ``a`` (boolean
    mask ``negatives``), else the largest ``d_an``; 0 for anchors without a negative.
    """
    sorted_negatives = ops.sort(ops.where(negatives, distances, _fill_value(distances)), axis=1)
    n_negatives = ops.sum(ops.cast(negatives, "int32"), axis=1, keepdims=True)
    # Number of negatives with d_an <= d_ap = index of the first one with d_an > d_ap
    # (fill values exceed every distance, so they are never counted).
    n_closer = _count_not_greater(sorted_negatives, distances)
    index = ops.where(n_closer < n_negatives, n_closer, n_negatives - 1)
    chosen = ops.take_along_axis(sorted_negatives, ops.maximum(index, 0), axis=1)
    return ops.where(n_negatives > 0, chosen, 0.0)


def semi_hard_negative_distance(distances, labels):
    """Semi-hard negative distance for every (anchor, positive) pair, shape (B, B).

    Following Schroff et al. (2015) as implemented in TF-Addons: entry ``[a, p]`` is the
    smallest ``d_an`` with ``d_an > d_ap`` over the negatives ``n`` of ``a``; when no
    negative is that far, the largest ``d_an``. Rows of anchors without a negative are 0.

    Each anchor's negative distances are sorted once and every ``d_ap`` is located in them
    by binary search, so memory is O(B^2) instead of the O(B^3) of comparing all triplets.
    """
    return semi_hard_negative(distances, negative_mask(labels))


def _hinge_sums(d, positives, negatives, margin, top_k=False):
    # [hinge sum, #active] over the triplets of the anchors (rows) of ``d``. Invalid
    # entries are filled so that their hinge is exactly 0 (no (A, C, C) mask is built):
    # a non-positive ``d_ap + margin`` of 0, and a ``d_an`` no ``d_ap + margin`` exceeds.
    d_pos = ops.where(positives, d + margin, 0.0)
    ceiling = ops.stop_gradient(ops.max(d_pos, initial=0.0))
    d_neg = ops.where(negatives, d, ceiling)
    if top_k:
        # Only the k = (most positives of any anchor) largest entries of each row can
        # give a hinge > 0: (A, k, C) instead of (A, C, C), e.g. 16x less for P x K = 16x4.
        k = ops.max(ops.sum(ops.cast(positives, "int32"), axis=1), initial=0)
        d_pos = ops.top_k(d_pos, k, sorted=False)[0]
    hinge = ops.relu(d_pos[:, :, None] - d_neg[:, None, :])
    return ops.stack([ops.sum(hinge), ops.sum(ops.cast(hinge > 1e-16, "float32"))])


def batch_all_stats(distances, positives, negatives, margin, top_k=False):
    """:func:`batch_all_hinge_stats` from boolean (anchor, candidate) masks.

    ``top_k=True`` keeps only each anchor's positives (a data-dependent size: faster in
    TensorFlow graphs, not compilable by XLA); the result is the same.
    """
    counts = ops.sum(ops.cast(positives, "float32"), axis=1) * ops.sum(
        ops.cast(negatives, "float32"), axis=1
    )
    n_valid = ops.sum(counts)
    static = tuple(distances.shape)
    if None not in static and static[0] * static[1] ** 2 <= BATCH_ALL_CHUNK_ELEMENTS:
        # One chunk, known when tracing: no loop (measurably faster per training step).
        totals = _hinge_sums(distances, positives, negatives, margin, top_k)
        return totals[0], totals[1], n_valid
    n_anchors, n = ops.shape(distances)[0], ops.shape(distances)[1]
    chunk = ops.clip(
        BATCH_ALL_CHUNK_ELEMENTS // ops.maximum(n * n, 1), 1, ops.maximum(n_anchors, 1)
    )
    n_chunks = (n_anchors + chunk - 1) // chunk
    anchors = ops.reshape(ops.arange(n_chunks * chunk), (n_chunks, chunk))

    def chunk_stats(index):
        rows = ops.minimum(index, n_anchors - 1)
        in_batch = (index < n_anchors)[:, None]  # padding anchors get no positive
        positive_rows = ops.logical_and(ops.take(positives, rows, axis=0), in_batch)
        return _hinge_sums(ops.take(distances, rows, axis=0), positive_rows,
                           ops.take(negatives, rows, axis=0), margin, top_k)  # fmt: skip

    totals = ops.sum(ops.map(chunk_stats, anchors), axis=0)
    return totals[0], totals[1], n_valid


def batch_all_hinge_stats(distances, labels, margin):
    """Sums over all valid triplets of ``l = max(d_ap - d_an + margin, 0)``.

    Returns
    -------
    hinge_sum : float32 scalar
        Sum of ``l`` over valid triplets.
    n_positive : float32 scalar
        Number of valid triplets with ``l > 1e-16``.
    n_valid : float32 scalar
        Number of valid triplets.

    Notes
    -----
    Anchors are processed in chunks of ``max(1, BATCH_ALL_CHUNK_ELEMENTS // B**2)`` with
    ``keras.ops.map``, so peak memory is about ``BATCH_ALL_CHUNK_ELEMENTS`` entries, also
    when the batch size is only known at run time (and under XLA).
    """
    labels = prepare_labels(labels)
    return batch_all_stats(distances, positive_mask(labels), negative_mask(labels), margin)


BatchView = collections.namedtuple(
    "BatchView",
    ["labels", "embeddings", "distances", "positives", "negatives", "context", "top_k",
     "candidates", "candidate_labels"],
    defaults=(False, None, None),
)
BatchView.__doc__ = """One batch as the losses see it: local anchors scored against candidates.

``labels`` (A,) int32 and ``embeddings`` (A, D) float32 are the local anchors;
``distances`` (A, C) float32 and the boolean ``positives``/``negatives`` (A, C) relate
them to the C candidates (the same batch, or the batch gathered from every replica);
``context`` is the ``tf.distribute.ReplicaContext`` it was gathered in, else None;
``top_k`` lets batch-all keep only each anchor's positives (see :func:`batch_all_stats`:
faster in TensorFlow graphs, not compilable by XLA); ``candidates`` (C, D) float32 and
``candidate_labels`` (C,) int32 are the candidates themselves (the similarity and proxy
losses score them by cosine similarity; the gathered ones carry gradients back to their
replica, memory rows none).
"""


def replica_context():
    """The current ``tf.distribute`` replica context when it has more than one replica."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def batch_view(labels, embeddings, distance, cross_replica=False, top_k=False):
    """Compute the one distance matrix of a batch and its positive/negative masks.

    Parameters
    ----------
    labels : array-like of shape (B,) or (B, 1)
        Integer or string-encoded integer class ids.
    embeddings : array-like of shape (B, D)
        Any float dtype; computed in float32.
    distance : {"euclidean", "squared", "cosine"}
        Distance between embeddings: euclidean (zero gradient at zero distance),
        squared euclidean, or 1 - cosine similarity.
    cross_replica : bool, default=False
        In a ``tf.distribute`` replica context with several replicas, score the local
        anchors against the embeddings and labels all-gathered from every replica
        (``ReplicaContext.all_gather``, whose gradient flows back to each replica's own
        rows). Elsewhere the batch is scored against itself.
    top_k : bool, default=False
        Stored in the view (see :class:`BatchView`).

    Returns
    -------
    BatchView
    """
    labels, embeddings = prepare_inputs(labels, embeddings)
    context = replica_context() if cross_replica else None
    if context is None:
        distances = pairwise_distances(embeddings, distance)
        return BatchView(labels, embeddings, distances, positive_mask(labels),
                         negative_mask(labels), None, top_k, embeddings, labels)
    all_embeddings = context.all_gather(embeddings, axis=0)
    all_labels = context.all_gather(labels, axis=0)
    n_local = ops.shape(labels)[0]
    # Where this replica's rows sit in the gathered batch (replicas may differ in size).
    sizes = context.all_gather(ops.reshape(n_local, (1,)), axis=0)
    earlier = ops.arange(ops.shape(sizes)[0]) < context.replica_id_in_sync_group
    offset = ops.sum(ops.where(earlier, sizes, 0))
    own = ops.equal((offset + ops.arange(n_local))[:, None],
                    ops.arange(ops.shape(all_labels)[0])[None, :])
    distances = ops.where(own, 0.0, cross_distances(embeddings, all_embeddings, distance))
    same = ops.equal(labels[:, None], all_labels[None, :])
    return BatchView(labels, embeddings, distances,
                     ops.logical_and(same, ops.logical_not(own)), ops.logical_not(same), context,
                     top_k, all_embeddings, all_labels)


def with_memory(view, embeddings, labels, valid, distance):
    """``view`` with ``embeddings`` (M, D) and ``labels`` (M,) appended to its candidates.

    The rows are a cross-batch memory (Wang et al. 2020, XBM): constants (no gradient),
    scored against the view's anchors with ``distance``; ``valid`` (M,) boolean marks the
    rows that hold something (the others are neither positives nor negatives).
    """
    embeddings = ops.stop_gradient(ops.cast(embeddings, "float32"))
    labels = ops.cast(labels, "int32")
    distances = cross_distances(view.embeddings, embeddings, distance)
    same = ops.equal(view.labels[:, None], labels[None, :])
    valid = ops.cast(valid, "bool")[None, :]
    candidates = view.candidates if view.candidates is not None else view.embeddings
    candidate_labels = (view.candidate_labels if view.candidate_labels is not None
                        else view.labels)
    return view._replace(
        distances=ops.concatenate([view.distances, distances], axis=1),
        positives=ops.concatenate([view.positives, ops.logical_and(same, valid)], axis=1),
        negatives=ops.concatenate(
            [view.negatives, ops.logical_and(ops.logical_not(same), valid)], axis=1),
        candidates=ops.concatenate([candidates, embeddings], axis=0),
        candidate_labels=ops.concatenate([candidate_labels, labels], axis=0),
    )


def check_flag(value, name):
    """Return ``value`` if it is True or False; ``TypeError`` naming ``name`` otherwise."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_margin(margin):
    """Return ``margin`` if it is a finite number >= 0 (tensors are passed through)."""
    if ops.is_tensor(margin):
        return margin
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real):
        raise TypeError(f"margin must be a number, got {margin!r}")
    if not np.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    return margin
