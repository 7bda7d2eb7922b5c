import numpy as np
import pytest
import tensorflow as tf

from embedder.losses import mining
from embedder.losses.mining import (
    batch_all_hinge_stats,
    batch_view,
    check_margin,
    hardest_negative_distance,
    hardest_positive_distance,
    negative_mask,
    positive_mask,
    prepare_inputs,
    prepare_labels,
    semi_hard_negative_distance,
)
from tests import _references as ref

LABELS = np.array([0, 0, 1, 1, 1, 2])  # class 2 is a singleton


def random_batch(seed, labels):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(labels), 4))
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    return d.astype("float32")


def test_masks_literal():
    pos = [
        [0, 1, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0],
        [0, 0, 0, 1, 1, 0],
        [0, 0, 1, 0, 1, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ]
    np.testing.assert_array_equal(positive_mask(LABELS), np.array(pos, bool))
    np.testing.assert_array_equal(negative_mask(LABELS), LABELS[:, None] != LABELS[None])


def test_batch_view_outside_a_strategy():
    x = np.random.default_rng(3).normal(size=(6, 3)).astype("float16")
    for cross_replica in (False, True):  # no replica context: the batch against itself
        view = batch_view(LABELS[:, None], x, "cosine", cross_replica)
        assert view.context is None and view.embeddings.dtype == "float32"
        np.testing.assert_array_equal(view.labels, LABELS)
        np.testing.assert_allclose(view.distances, ref.pairwise(x.astype("float32"), "cosine"),
                                   atol=1e-5)  # fmt: skip
        np.testing.assert_array_equal(view.positives, positive_mask(LABELS))
        np.testing.assert_array_equal(view.negatives, negative_mask(LABELS))


@pytest.mark.parametrize(
    "labels",
    [
        [3, 1, 3],
        [[3], [1], [3]],
        np.array(["3", "1", "3"]),
        np.array([b"3", b"1", b"3"], dtype=object),
        tf.constant(["3", "1", "3"]),
        tf.constant([[3.0], [1.0], [3.0]]),
        np.array([3, 1, 3], dtype=np.int64),
    ],
)
def test_prepare_inputs_label_forms(labels):
    y, x = prepare_inputs(labels, np.zeros((3, 2), dtype="float16"))
    assert y.dtype == "int32" and x.dtype == "float32"
    np.testing.assert_array_equal(y, [3, 1, 3])
    assert tuple(x.shape) == (3, 2)


def test_prepare_inputs_errors():
    with pytest.raises(
        ValueError,
        match=r"labels must have one entry per row of embeddings: expected 4 labels "
        r"\(embeddings of shape \(4, 2\)\), got 3",
    ):
        prepare_inputs([0, 0, 1], np.zeros((4, 2)))
    with pytest.raises(
        ValueError,
        match=r"labels must have shape \(batch_size,\) or \(batch_size, 1\), "
        r"got shape \(4, 2\)",
    ):
        prepare_inputs(np.zeros((4, 2)), np.zeros((4, 2)))
    with pytest.raises(
        ValueError,
        match=r"embeddings must be a 2-D tensor of shape \(batch_size, "
        r"embedding_dim\), got shape \(4,\)",
    ):
        prepare_inputs([0, 0, 1, 1], np.zeros(4))
    with pytest.raises(
        ValueError,
        match=r"labels must be integers or string-encoded integers, got values such as "
        r"\['cat', 'dog'\]",
    ):
        prepare_labels(np.array(["cat", "dog"]))


def test_check_margin():
    assert check_margin(0) == 0 and check_margin(np.float32(0.5)) == np.float32(0.5)
    with pytest.raises(ValueError, match=r"margin must be a finite number >= 0, got -0.1"):
        check_margin(-0.1)
    with pytest.raises(ValueError, match=r"margin must be a finite number >= 0, got nan"):
        check_margin(float("nan"))
    with pytest.raises(TypeError, match=r"margin must be a number, got '0.2'"):
        check_margin("0.2")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hardest_distances_brute_force(seed):
    d = random_batch(seed, LABELS)
    hp, hn = [], []
    for a in range(6):
        pos = [d[a, p] for p in range(6) if p != a and LABELS[p] == LABELS[a]]
        neg = [d[a, n] for n in range(6) if LABELS[n] != LABELS[a]]
        hp.append(max(pos, default=0.0))
        hn.append(min(neg, default=0.0))
    np.testing.assert_allclose(hardest_positive_distance(d, LABELS), hp, rtol=1e-6)
    np.testing.assert_allclose(hardest_negative_distance(d, LABELS), hn, rtol=1e-6)


def reference_semi_hard(d, labels):
    return ref.semi_hard_negatives(labels, d)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_semi_hard_brute_force(seed):
    d = random_batch(seed, LABELS)
    np.testing.assert_allclose(
        semi_hard_negative_distance(d, LABELS), reference_semi_hard(d, LABELS), rtol=1e-6
    )


def test_semi_hard_literal_with_ties():
    # Anchor 0: d_ap = 2; negatives at 2 (not farther: ties are not semi-hard) and 3.
    d = np.array([[0, 2, 2, 3], [2, 0, 1, 1], [2, 1, 0, 5], [3, 1, 5, 0]], "float32")
    got = semi_hard_negative_distance(d, [0, 0, 1, 2]).numpy()
    np.testing.assert_allclose(got[0, 1], 3.0)
    np.testing.assert_allclose(got[1, 0], 1.0)  # nothing farther than 2: largest negative
    single_class = semi_hard_negative_distance(d, [4, 4, 4, 4])
    np.testing.assert_array_equal(single_class, 0.0)


def reference_stats(d, labels, margin):
    hinges = ref.batch_all_hinges(labels, d, margin)
    return hinges.sum(), (hinges > 1e-16).sum(), len(hinges)


@pytest.mark.parametrize("top_k", [False, True])
@pytest.mark.parametrize("chunk_elements", [2**24, 1, 50, 100])
def test_batch_all_stats_chunked(monkeypatch, chunk_elements, top_k):
    # 1 -> one anchor per chunk; 100 // 49 = 2 -> chunks of 2 with a padded last chunk.
    monkeypatch.setattr(mining, "BATCH_ALL_CHUNK_ELEMENTS", chunk_elements)
    labels = np.array([0, 0, 1, 1, 1, 2, 0])
    d = random_batch(5, labels)
    pos, neg = positive_mask(labels), negative_mask(labels)
    got = [float(v) for v in mining.batch_all_stats(d, pos, neg, 1.0, top_k=top_k)]
    np.testing.assert_allclose(got, reference_stats(d, labels, 1.0), rtol=1e-5)
    got = [float(v) for v in batch_all_hinge_stats(d, labels, 1.0)]
    np.testing.assert_allclose(got, reference_stats(d, labels, 1.0), rtol=1e-5)


def test_batch_all_top_k_in_graph_with_ties_and_zero_margin():
    # Duplicated rows: zero distances, hinges of exactly 0 that must not count as active.
    labels = np.array([0, 0, 0, 1, 1, 2], dtype="int32")
    x = np.array([[0.0], [0.0], [1.0], [0.0], [2.0], [1.0]], dtype="float32")
    d = ref.pairwise(x, "euclidean").astype("float32")
    spec = [tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int32)]

    @tf.function(input_signature=spec)
    def stats(d, labels):
        return mining.batch_all_stats(d, positive_mask(labels), negative_mask(labels), 0.0,
                                      top_k=True)  # fmt: skip

    got = [float(v) for v in stats(d, labels)]
    np.testing.assert_allclose(got, reference_stats(d, labels, 0.0), rtol=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_dynamic_batch_size_in_graph(jit_compile):
    labels = np.array([0, 0, 1, 1, 1, 2, 0], dtype="int32")
    d = random_batch(7, labels)
    spec = [tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int32)]

    @tf.function(input_signature=spec, jit_compile=jit_compile)
    def mine(d, labels):
        return (
            semi_hard_negative_distance(d, labels),
            hardest_negative_distance(d, labels),
            batch_all_hinge_stats(d, labels, 1.0),
        )

    semi, hardest, stats = mine(d, labels)
    np.testing.assert_allclose(semi, reference_semi_hard(d, labels), rtol=1e-6)
    np.testing.assert_allclose(hardest, hardest_negative_distance(d, labels), rtol=1e-6)
    np.testing.assert_allclose(
        [float(v) for v in stats], reference_stats(d, labels, 1.0), rtol=1e-5
    )


def test_semi_hard_portable_search(monkeypatch):
    # Backends other than TensorFlow vectorise the 1-D keras.ops.searchsorted instead.
    import keras

    labels = np.array([0, 0, 1, 1, 1, 2, 0])
    d = random_batch(8, labels)
    monkeypatch.setattr(keras.backend, "backend", lambda: "portable")
    np.testing.assert_allclose(
        semi_hard_negative_distance(d, labels), reference_semi_hard(d, labels), rtol=1e-6
    )
