"""Pairwise and row-wise distances between embeddings, in ``keras.ops``.

Three distances are supported (``DISTANCES``):

- ``"squared"``: :math:`\\lVert x_i - x_j \\rVert_2^2`;
- ``"euclidean"``: :math:`\\lVert x_i - x_j \\rVert_2`, the square root taken so that the
  gradient at zero distance is zero instead of NaN (:math:`d\\sqrt{s}/ds` is infinite at 0);
- ``"cosine"``: :math:`1 - \\cos(x_i, x_j)`, rows normalised safely so that zero vectors give
  a distance of 1 to every other row (and no NaN).

All results are float32, whatever the input dtype (mixed precision computes losses in
float32), and the diagonal of a pairwise matrix is exactly zero.
"""

from keras import ops

DISTANCES = ("euclidean", "squared", "cosine")

# Squared norms below this are treated as zero when normalising rows (same value as
# keras.ops.normalize / keras.layers.UnitNormalization).
_NORM_EPSILON = 1e-12


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


def safe_sqrt(squared):
    """Element-wise square root whose gradient is 0 (not inf/NaN) where ``squared == 0``.

    Exact zeros are lifted to a tiny positive value before the square root (so its
    derivative is finite) and the result is multiplied by zero there again (so the value
    and the gradient are exactly zero). ``squared`` must be non-negative.
    """
    is_zero = ops.cast(ops.less_equal(squared, 0.0), squared.dtype)
    root = ops.sqrt(squared + is_zero * _NORM_EPSILON)
    return root * (1.0 - is_zero)


def _unit_rows(x):
    # x / max(||x||, sqrt(eps)): zero rows stay zero, the derivative stays finite.
    squared_norm = ops.sum(ops.square(x), axis=-1, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared_norm, _NORM_EPSILON))


def pairwise_distances(embeddings, distance="euclidean"):
    """Distances between every pair of rows of ``embeddings``.

    Parameters
    ----------
    embeddings : tensor-like of shape (B, D)
        Any float dtype; computed in float32.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"

    Returns
    -------
    tensor of shape (B, B), float32
        Non-negative, symmetric, with an exactly zero diagonal. Squared distances use
        :math:`\\lVert x_i\\rVert^2 - 2 x_i^\\top x_j + \\lVert x_j\\rVert^2` (one matmul,
        O(B^2) memory), clipped at 0 against rounding.
    """
    check_distance(distance)
    x = check_embeddings(embeddings)
    n = ops.shape(x)[0]
    index = ops.arange(n)
    off_diagonal = ops.cast(ops.not_equal(index[:, None], index[None, :]), "float32")
    if distance == "cosine":
        unit = _unit_rows(x)
        cosine = ops.matmul(unit, ops.transpose(unit))
        return ops.clip(1.0 - cosine, 0.0, 2.0) * off_diagonal
    squared_norm = ops.sum(ops.square(x), axis=1)
    gram = ops.matmul(x, ops.transpose(x))
    squared = squared_norm[:, None] - 2.0 * gram + squared_norm[None, :]
    # Rounding can make the expansion slightly negative; the diagonal is zero by definition.
    squared = ops.maximum(squared, 0.0) * off_diagonal
    if distance == "squared":
        return squared
    return safe_sqrt(squared)


def paired_distances(x, y, distance="euclidean"):
    """Distance between row ``i`` of ``x`` and row ``i`` of ``y``, for every ``i``.

    Parameters
    ----------
    x, y : tensor-like of shape (B, D)
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"

    Returns
    -------
    tensor of shape (B,), float32
    """
    check_distance(distance)
    x = check_embeddings(x, name="x")
    y = check_embeddings(y, name="y")
    if tuple(x.shape) != tuple(y.shape) and None not in tuple(x.shape) + tuple(y.shape):
        raise ValueError(
            f"x and y must have the same shape, got x of shape {tuple(x.shape)} "
            f"and y of shape {tuple(y.shape)}"
        )
    if distance == "cosine":
        cosine = ops.sum(_unit_rows(x) * _unit_rows(y), axis=1)
        return ops.clip(1.0 - cosine, 0.0, 2.0)
    squared = ops.sum(ops.square(x - y), axis=1)
    if distance == "squared":
        return squared
    return safe_sqrt(squared)
