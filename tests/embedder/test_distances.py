import numpy as np
import pytest
import tensorflow as tf

from embedder.distances import (
    DISTANCES,
    check_distance,
    paired_distances,
    pairwise_distances,
    safe_sqrt,
)


def reference_distance(u, v, distance):
    """Brute-force distance between two vectors, in float64."""
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    if distance == "cosine":
        nu, nv = np.linalg.norm(u), np.linalg.norm(v)
        cosine = 0.0 if nu == 0 or nv == 0 else u @ v / (nu * nv)
        return 1.0 - cosine
    squared = np.sum((u - v) ** 2)
    return squared if distance == "squared" else np.sqrt(squared)


def reference_pairwise(x, distance):
    n = len(x)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                out[i, j] = reference_distance(x[i], x[j], distance)
    return out


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("shape", [(6, 3), (17, 8), (24, 32)])
def test_pairwise_matches_brute_force(distance, shape):
    x = np.random.default_rng(sum(shape)).normal(size=shape).astype("float32")
    got = pairwise_distances(x, distance)
    assert got.dtype == "float32"
    assert tuple(got.shape) == (shape[0], shape[0])
    np.testing.assert_allclose(got, reference_pairwise(x, distance), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.diag(got), 0.0)


@pytest.mark.parametrize("distance", DISTANCES)
def test_paired_matches_brute_force(distance):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2, 9, 4)).astype("float32")
    expected = [reference_distance(u, v, distance) for u, v in zip(x, y, strict=True)]
    np.testing.assert_allclose(paired_distances(x, y, distance), expected, rtol=1e-5, atol=1e-6)


def test_literal_values_with_zero_vectors():
    x = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]], dtype="float32")
    np.testing.assert_allclose(
        pairwise_distances(x, "euclidean"), [[0, 5, 0], [5, 0, 5], [0, 5, 0]], atol=1e-6
    )
    np.testing.assert_allclose(
        pairwise_distances(x, "squared"), [[0, 25, 0], [25, 0, 25], [0, 25, 0]], atol=1e-5
    )
    # Zero vectors have cosine similarity 0 to everything: distance 1 off the diagonal.
    np.testing.assert_allclose(
        pairwise_distances(x, "cosine"), [[0, 1, 1], [1, 0, 1], [1, 1, 0]], atol=1e-6
    )
    unit = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]], dtype="float32")
    np.testing.assert_allclose(
        pairwise_distances(unit, "cosine"), [[0, 1, 2], [1, 0, 1], [2, 1, 0]], atol=1e-6
    )


def test_default_distance_is_euclidean():
    x = np.array([[0.0, 0.0], [6.0, 8.0]], dtype="float32")
    np.testing.assert_allclose(pairwise_distances(x), [[0, 10], [10, 0]], atol=1e-6)
    np.testing.assert_allclose(paired_distances(x, x[::-1]), [10, 10], atol=1e-6)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("case", ["duplicated", "identical", "zeros"])
def test_gradients_are_finite(distance, case):
    rng = np.random.default_rng(0)
    x = {
        "duplicated": np.repeat(rng.normal(size=(3, 4)), 2, axis=0),
        "identical": np.ones((6, 4)),
        "zeros": np.zeros((6, 4)),
    }[case].astype("float32")
    x = tf.Variable(x)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(pairwise_distances(x, distance)) + tf.reduce_sum(
            paired_distances(x, x[::-1], distance)
        )
    grad = tape.gradient(total, x)
    assert np.isfinite(total.numpy())
    assert np.all(np.isfinite(grad.numpy()))


def test_euclidean_gradient_is_zero_at_zero_distance():
    x = tf.Variable(np.ones((4, 3), dtype="float32"))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(pairwise_distances(x, "euclidean"))
    np.testing.assert_array_equal(tape.gradient(total, x), 0.0)
    s = tf.Variable([0.0, 4.0])
    with tf.GradientTape() as tape:
        root = safe_sqrt(s)
    np.testing.assert_allclose(root, [0.0, 2.0])
    np.testing.assert_allclose(tape.jacobian(root, s), [[0.0, 0.0], [0.0, 0.25]])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_computes_in_float32(dtype):
    x = tf.cast(np.random.default_rng(1).normal(size=(5, 3)), dtype)
    got = pairwise_distances(x, "euclidean")
    assert got.dtype == "float32"
    np.testing.assert_allclose(got, pairwise_distances(tf.cast(x, "float32")), rtol=1e-6)


def test_unknown_distance():
    msg = r"distance must be one of \['cosine', 'euclidean', 'squared'\], got 'manhattan'"
    with pytest.raises(ValueError, match=msg):
        check_distance("manhattan")
    with pytest.raises(ValueError, match=msg):
        pairwise_distances(np.zeros((2, 2)), "manhattan")
    with pytest.raises(ValueError, match=r"got None"):
        paired_distances(np.zeros((2, 2)), np.zeros((2, 2)), None)


def test_bad_shapes():
    with pytest.raises(
        ValueError,
        match=r"embeddings must be a 2-D tensor of shape \(batch_size, embedding_dim\), "
        r"got shape \(2, 3, 4\)",
    ):
        pairwise_distances(np.zeros((2, 3, 4)))
    with pytest.raises(
        ValueError,
        match=r"x and y must have the same shape, got x of shape \(2, 3\) "
        r"and y of shape \(3, 3\)",
    ):
        paired_distances(np.zeros((2, 3)), np.zeros((3, 3)))
