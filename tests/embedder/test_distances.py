import numpy as np
import pytest
import tensorflow as tf

from embedder.distances import (
    DISTANCES,
    MAX_DISTANCE,
    check_distance,
    cross_distances,
    paired_distances,
    pairwise_distances,
    row_norms,
    safe_sqrt,
)
from tests import _references as ref

reference_distance = ref.distance
reference_pairwise = ref.pairwise


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


@pytest.mark.parametrize("distance", DISTANCES)
def test_cross_distances_match_brute_force(distance):
    rng = np.random.default_rng(21)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))
    expected = [[reference_distance(u, v, distance) for v in y] for u in x]
    got = cross_distances(x, y, distance)
    assert tuple(got.shape) == (3, 5) and got.dtype == "float32"
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", [1e-30, 1e-10, 1e10, 1e14])
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_scale_safe(distance, scale):
    # Exact up to float32 rounding at any scale below the saturation (the old expansion
    # lost every digit from about 1e10 and gave NaN from 1e19).
    x = np.random.default_rng(22).normal(size=(6, 3))
    expected = reference_pairwise(x, distance) * (scale if distance == "euclidean" else 1.0)
    got = pairwise_distances((x * scale).astype("float32"), distance)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * expected.max())
    paired = paired_distances((x * scale).astype("float32"), (x[::-1] * scale).astype("float32"),
                              distance)  # fmt: skip
    np.testing.assert_allclose(paired, np.diag(expected[:, ::-1]), rtol=1e-4)


def test_squared_saturates_at_max_distance():
    x = np.array([[0.0, 0.0], [3e20, 4e20], [0.0, 1.0]], dtype="float32")
    got = pairwise_distances(x, "squared").numpy()
    assert np.all(np.isfinite(got)) and got.max() <= MAX_DISTANCE
    # One constant scales the batch down: the ratios of distances are kept.
    np.testing.assert_allclose(got[0, 1] / got[1, 2], 25 / (9 + 16), rtol=1e-4)
    small = pairwise_distances(np.array([[0.0], [1e-15]], "float32"), "squared")
    np.testing.assert_allclose(small[0, 1], 1e-30, rtol=1e-5)  # not underflowed to 0
    euclidean = pairwise_distances(np.array([[0.0], [1e30], [2e30]], "float32"))
    # cap for D = 1: MAX_DISTANCE / 2 is the largest possible distance of scaled rows
    expected = np.array([[0, 0.5, 1], [0.5, 0, 0.5], [1, 0.5, 0]]) * MAX_DISTANCE / 2
    np.testing.assert_allclose(euclidean, expected, rtol=1e-5)


def test_row_norms():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [3e30, 4e30]], dtype="float32")
    np.testing.assert_allclose(row_norms(x), [5.0, 0.0, 5e30], rtol=1e-6)


def test_non_finite_raises():
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"x contain NaN or infinity"):
        cross_distances(np.array([[np.inf, 0.0]]), np.zeros((2, 2)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"embeddings contain NaN"):
        pairwise_distances(np.array([[np.nan, 0.0], [0.0, 0.0]]))
