"""Pairwise and row-wise distances between embeddings, in ``keras.ops``.

Three distances are supported (``DISTANCES``):

- ``"squared"``: :math:`\\lVert x_i - x_j \\rVert_2^2`;
- ``"euclidean"``: :math:`\\lVert x_i - x_j \\rVert_2`, the square root taken so that the
  gradient at zero distance is zero instead of NaN (:math:`d\\sqrt{s}/ds` is infinite at 0);
- ``"cosine"``: :math:`1 - \\cos(x_i, x_j)`, rows normalised safely so that zero vectors give
  a distance of 1 to every other row (and no NaN).

All results are float32, whatever the input dtype (mixed precision computes losses in
float32), and the diagonal of a pairwise matrix is exactly zero.

Numerics (finite or an error, never NaN):

- The batch is divided by its largest absolute entry before anything is squared (a
  constant for the gradient) and the distances are scaled back afterwards, so that
  neither ``||x||^2`` nor ``x_i^T x_j`` overflows (``inf - inf``) for large embeddings nor
  underflows for tiny ones. Cosine rows are each divided by their own largest entry.
- Distances saturate at :data:`MAX_DISTANCE`: when the batch is so large that a distance
  could exceed it, the whole batch is scaled down by one constant first (the gradient
  keeps its direction). The losses built on these distances therefore stay finite, with
  finite gradients, for every finite float32 input (encoders here output unit vectors,
  whose distances are at most 2, or 4 squared, far below the limit).
- Non-finite inputs raise ``tf.errors.InvalidArgumentError`` ("embeddings contain NaN or
  infinity") when run eagerly or in a ``tf.function``; inside an XLA-compiled step
  TensorFlow cannot raise, and the result is then NaN (which Keras's ``TerminateOnNaN``
  sees), as for any diverged model.
"""

import keras
from keras import ops

DISTANCES = ("euclidean", "squared", "cosine")

#: Largest distance the functions here return: far above any useful embedding distance,
#: low enough that sums over a batch's B**3 triplets and contrastive squares stay finite.
MAX_DISTANCE = 1e15

# Squared norms below this are treated as zero when normalising rows (same value as
# keras.ops.normalize / keras.layers.UnitNormalization).
_NORM_EPSILON = 1e-12
# Squared distances below this fraction of the batch's largest squared entry are rounding
# noise of the one-matmul expansion; they are set to exactly 0, which also bounds the
# derivative of the square root (1 / (2 sqrt(s))) by 5e9 in scaled units.
_NOISE_FLOOR = 1e-20
# Cosine rows are divided by max(largest entry, this): all-zero rows stay zero, rows down
# to 1e-36 keep their exact direction, and the derivative stays finite below that.
_TINY_ROW = 1e-30


def check_distance(distance):
    """Return ``distance`` if it names a supported distance, else raise ``ValueError``."""
    if not isinstance(distance, str) or distance not in DISTANCES:
        raise ValueError(f"distance must be one of {sorted(DISTANCES)}, got {distance!r}")
    return distance


def check_embeddings(embeddings, name="embeddings"):
    """Convert ``embeddings`` to a float32 tensor and check that it is 2-D.

    Raises
    ------
    ValueError
        If the tensor is not of rank 2 ``(batch_size, embedding_dim)``.
    """
    embeddings = ops.convert_to_tensor(embeddings)
    if len(embeddings.shape) != 2:
        raise ValueError(
            f"{name} must be a 2-D tensor of shape (batch_size, embedding_dim), "
            f"got shape {tuple(embeddings.shape)}"
        )
    if embeddings.dtype != "float32":
        embeddings = ops.cast(embeddings, "float32")
    return embeddings


def check_finite(x, name="embeddings"):
    """Return ``x``; raise ``InvalidArgumentError`` naming ``name`` if it has NaN or inf.

    Checked by TensorFlow at run time (eagerly and in graphs); a no-op under XLA and on
    other backends.
    """
    if keras.backend.backend() != "tensorflow":
        return x
    import tensorflow as tf

    return tf.debugging.check_numerics(x, f"{name} contain NaN or infinity")


def safe_sqrt(squared):
    """Element-wise square root whose gradient is 0 (not inf/NaN) where ``squared == 0``.

    Exact zeros are lifted to a tiny positive value before the square root (so its
    derivative is finite) and the result is set to zero there again (so the value and
    the gradient are exactly zero). ``squared`` must be non-negative.
    """
    is_zero = ops.less_equal(squared, 0.0)
    root = ops.sqrt(ops.where(is_zero, _NORM_EPSILON, squared))
    return ops.where(is_zero, 0.0, root)


def _unit_rows(x):
    # Divide each row by its largest entry first (exact for a direction, no overflow of
    # the squared norm), then by max(||x||, sqrt(eps)): zero rows stay zero.
    peak = ops.stop_gradient(ops.max(ops.abs(x), axis=-1, keepdims=True))
    x = x / ops.maximum(peak, _TINY_ROW)
    squared_norm = ops.sum(ops.square(x), axis=-1, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared_norm, _NORM_EPSILON))


def _batch_scale(tensors, distance):
    """(divisor, factor): distances of ``x / divisor`` times ``factor`` give the result.

    ``divisor`` is the largest absolute entry (1 for an all-zero batch); ``factor`` is
    ``divisor`` (``divisor**2`` for squared), capped so that no distance exceeds
    :data:`MAX_DISTANCE`. Both are constants for the gradient.
    """
    peak = ops.max(ops.stack([ops.max(ops.abs(t), initial=0.0) for t in tensors]))
    divisor = ops.stop_gradient(ops.where(peak > 0.0, peak, 1.0))
    dim = ops.cast(ops.shape(tensors[0])[1], "float32")
    # Scaled rows have entries in [-1, 1], so distances are at most 2 sqrt(dim) (4 dim).
    if distance == "squared":
        cap = ops.sqrt(MAX_DISTANCE / (4.0 * ops.maximum(dim, 1.0)))
        return divisor, ops.square(ops.minimum(divisor, cap))
    cap = MAX_DISTANCE / (2.0 * ops.sqrt(ops.maximum(dim, 1.0)))
    return divisor, ops.minimum(divisor, cap)


def _from_squared(squared, factor, distance):
    # ``squared`` is in scaled units; drop rounding noise, then take the root if needed.
    squared = ops.where(squared < _NOISE_FLOOR, 0.0, squared)
    if distance == "squared":
        return squared * factor
    return safe_sqrt(squared) * factor


def cross_distances(x, y, distance="euclidean"):
    """Distances between every row of ``x`` and every row of ``y``.

    Parameters
    ----------
    x : tensor-like of shape (B1, D)
        Any float dtype; computed in float32.
    y : tensor-like of shape (B2, D)
        Second set of embeddings, compared with every row of ``x``.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Distance between embeddings: euclidean (zero gradient at zero distance),
        squared euclidean, or 1 - cosine similarity.

    Returns
    -------
    tensor of shape (B1, B2), float32
        Non-negative. Squared distances use :math:`\\lVert x_i\\rVert^2 - 2 x_i^\\top y_j +
        \\lVert y_j\\rVert^2` on scaled rows (one matmul, O(B1 B2) memory), clipped at 0
        against rounding.
    """
    check_distance(distance)
    x = check_finite(check_embeddings(x, name="x"), "x")
    y = check_finite(check_embeddings(y, name="y"), "y")
    return _cross(x, y, distance)


def _cross(x, y, distance):
    if distance == "cosine":
        cosine = ops.matmul(_unit_rows(x), ops.transpose(_unit_rows(y)))
        return ops.clip(1.0 - cosine, 0.0, 2.0)
    divisor, factor = _batch_scale([x, y], distance)
    x, y = x / divisor, y / divisor
    x_norm = ops.sum(ops.square(x), axis=1)
    y_norm = ops.sum(ops.square(y), axis=1)
    squared = x_norm[:, None] - 2.0 * ops.matmul(x, ops.transpose(y)) + y_norm[None, :]
    return _from_squared(ops.maximum(squared, 0.0), factor, distance)


def pairwise_distances(embeddings, distance="euclidean"):
    """Distances between every pair of rows of ``embeddings``.

    Parameters
    ----------
    embeddings : tensor-like of shape (B, D)
        Any float dtype; computed in float32.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Distance between embeddings: euclidean (zero gradient at zero distance),
        squared euclidean, or 1 - cosine similarity.

    Returns
    -------
    tensor of shape (B, B), float32
        Non-negative, symmetric, with an exactly zero diagonal; see :func:`cross_distances`
        and the module notes on numerics.
    """
    check_distance(distance)
    x = check_finite(check_embeddings(embeddings))
    index = ops.arange(ops.shape(x)[0])
    diagonal = ops.equal(index[:, None], index[None, :])
    return ops.where(diagonal, 0.0, _cross(x, x, distance))


def paired_distances(x, y, distance="euclidean"):
    """Distance between row ``i`` of ``x`` and row ``i`` of ``y``, for every ``i``.

    Parameters
    ----------
    x, y : tensor-like of shape (B, D)
        Any float dtype; computed in float32.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Distance between embeddings: euclidean (zero gradient at zero distance),
        squared euclidean, or 1 - cosine similarity.

    Returns
    -------
    tensor of shape (B,), float32
    """
    check_distance(distance)
    x = check_finite(check_embeddings(x, name="x"), "x")
    y = check_finite(check_embeddings(y, name="y"), "y")
    if tuple(x.shape) != tuple(y.shape) and None not in tuple(x.shape) + tuple(y.shape):
        raise ValueError(
            f"x and y must have the same shape, got x of shape {tuple(x.shape)} "
            f"and y of shape {tuple(y.shape)}"
        )
    if distance == "cosine":
        cosine = ops.sum(_unit_rows(x) * _unit_rows(y), axis=1)
        return ops.clip(1.0 - cosine, 0.0, 2.0)
    divisor, factor = _batch_scale([x, y], distance)
    squared = ops.sum(ops.square(x / divisor - y / divisor), axis=1)
    return _from_squared(squared, factor, distance)


def row_norms(embeddings):
    """L2 norm of every row, shape (B,), float32, without overflow for large entries."""
    x = check_embeddings(embeddings)
    peak = ops.max(ops.abs(x), axis=1, keepdims=True)
    peak = ops.stop_gradient(ops.where(peak > 0.0, peak, 1.0))
    return ops.sqrt(ops.sum(ops.square(x / peak), axis=1)) * peak[:, 0]

