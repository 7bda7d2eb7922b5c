import keras
import numpy as np
import pytest
import tensorflow as tf

from embedder.distances import DISTANCES
from embedder.losses import (
    MetricLoss,
    batch_view,
    circle_loss,
    multi_similarity_loss,
    supervised_contrastive_loss,
)
from embedder.losses.similarity import multi_similarity_pairs
from tests import _references as ref

FUNCTIONS = {
    "multi_similarity": multi_similarity_loss,
    "supervised_contrastive": supervised_contrastive_loss,
    "circle": circle_loss,
}
# The defaults, and settings where other terms dominate (softer scales, a wide miner).
SETTINGS = {
    "multi_similarity": [{}, {"alpha": 5.0, "beta": 10.0, "base": 0.2, "epsilon": 0.5}],
    "supervised_contrastive": [{}, {"temperature": 0.5}],
    "circle": [{"margin": 0.4}, {"margin": 0.25, "gamma": 8.0}],
}
LABEL_SETS = {
    "balanced_3x4": [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2],
    "singletons": [0, 0, 0, 1, 1, 2, 3, 4, 5, 5, 5, 5],
    "one_class": [1, 1, 1, 1],
    "random_5": list(np.random.default_rng(7).integers(0, 5, size=20)),
}


def _call_ref(name, labels, x, settings):
    settings = dict(settings)
    margin = settings.pop("margin", None)
    return ref.LOSSES[name](labels, x, margin, "cosine", **settings)


@pytest.mark.parametrize("labels", list(LABEL_SETS))
@pytest.mark.parametrize("index", [0, 1])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_matches_brute_force(name, index, labels):
    labels = np.array(LABEL_SETS[labels])
    settings = SETTINGS[name][index]
    x = np.random.default_rng(len(labels) + index).normal(size=(len(labels), 5))
    got = FUNCTIONS[name](labels, x.astype("float32"), **settings)
    assert got.dtype == "float32" and tuple(got.shape) == ()
    expected = _call_ref(name, labels, x, settings)
    if labels.tolist() != LABEL_SETS["one_class"]:
        assert expected > 0
    np.testing.assert_allclose(float(got), expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_distance_does_not_change_the_loss(name, distance):
    # Similarity losses score cosine similarities; ``distance`` is the diagnostics' matrix.
    labels = LABEL_SETS["balanced_3x4"]
    x = np.random.default_rng(3).normal(size=(12, 4)).astype("float32")
    assert float(FUNCTIONS[name](labels, x, distance=distance)) == pytest.approx(
        float(FUNCTIONS[name](labels, x)), rel=1e-6)


def test_scale_invariant():
    labels = LABEL_SETS["random_5"]
    x = np.random.default_rng(5).normal(size=(20, 4)).astype("float32")
    for fn in FUNCTIONS.values():
        assert float(fn(labels, 1e4 * x)) == pytest.approx(float(fn(labels, x)), rel=1e-4)


@pytest.mark.parametrize("margin", [0.25, 0.4])
def test_circle_matches_keras_circle_on_unit_rows(margin):
    # keras.losses.circle has the paper's formula but expects unit rows and returns one
    # value per anchor (0 for an anchor without positives: none here).
    labels = np.array(LABEL_SETS["balanced_3x4"])
    x = np.random.default_rng(8).normal(size=(12, 6))
    unit = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("float32")
    keras_value = float(np.mean(keras.losses.circle(labels, unit, margin=margin, gamma=80)))
    assert float(circle_loss(labels, unit, margin=margin)) == pytest.approx(keras_value,
                                                                             rel=1e-5)
    assert float(circle_loss(labels, 3.0 * unit, margin=margin)) == pytest.approx(
        keras_value, rel=1e-5)  # ours normalises, Keras's would not


def test_multi_similarity_miner_literal():
    # Anchor 0: positives at similarity 0.9 and 0.3, negatives at 0.2 and 0.85.
    s = np.array([[0.0, 0.9, 0.3, 0.2, 0.85]], dtype="float32")
    positives = np.array([[False, True, True, False, False]])
    negatives = np.array([[False, False, False, True, True]])
    kept_p, kept_n = multi_similarity_pairs(s, positives, negatives, 0.1)
    # positives kept where s - 0.1 < max negative 0.85: 0.3 only (0.9 - 0.1 = 0.8 < 0.85
    # too); negatives kept where s + 0.1 > min positive 0.3: 0.2 + 0.1 = 0.3 is not > 0.3.
    assert np.asarray(kept_p).tolist() == [[False, True, True, False, False]]
    assert np.asarray(kept_n).tolist() == [[False, False, False, False, True]]
    kept_p, _ = multi_similarity_pairs(s, positives, negatives, 0.0)
    assert np.asarray(kept_p).tolist() == [[False, False, True, False, False]]


def test_multi_similarity_literal_value():
    # Two classes on orthogonal axes: s_ap = 1, s_an = 0. The miner keeps no positive
    # (1 - 0.1 < 0 is false) and no negative (0 + 0.1 > 1 is false), so each anchor's
    # loss is (log 1) / alpha + (log 1) / beta = 0.
    labels = [0, 0, 1, 1]
    x = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], "float32")
    assert float(multi_similarity_loss(labels, x)) == 0.0
    # epsilon = 2 keeps every pair: log(1 + e^{-2 (1 - 0.5)}) / 2 + log(1 + 2 e^{50(0-0.5)}) / 50
    expected = np.log1p(np.exp(-1.0)) / 2 + np.log1p(2 * np.exp(-25.0)) / 50
    assert float(multi_similarity_loss(labels, x, epsilon=2.0)) == pytest.approx(expected)


def test_supervised_contrastive_literal_value():
    labels = [0, 0, 1]
    x = np.array([[1, 0], [1, 0], [0, 1]], "float32")
    t = 0.5
    # anchors 0 and 1: -log(e^{2} / (e^{2} + e^{0})); anchor 2 has no positive
    expected = -np.log(np.exp(2.0) / (np.exp(2.0) + 1.0))
    assert float(supervised_contrastive_loss(labels, x, temperature=t)) == pytest.approx(
        expected, rel=1e-6)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_gradient_matches_finite_differences(name):
    labels = [0, 0, 0, 1, 1, 2]
    x0 = np.random.default_rng(2).normal(size=(6, 3))
    settings = SETTINGS[name][1]  # moderate scales: float32 differences stay accurate
    fn = FUNCTIONS[name]
    x = tf.Variable(x0.astype("float32"))
    with tf.GradientTape() as tape:
        loss = fn(labels, x, **settings)
    grad = tape.gradient(loss, x).numpy()
    numeric, eps = np.zeros_like(x0), 1e-4
    for index in np.ndindex(*x0.shape):
        step = np.zeros_like(x0)
        step[index] = eps
        numeric[index] = (_call_ref(name, labels, x0 + step, settings)
                          - _call_ref(name, labels, x0 - step, settings)) / (2 * eps)
    assert np.abs(numeric).max() > 1e-2
    np.testing.assert_allclose(grad, numeric, atol=2e-3, rtol=1e-2)


def test_cross_replica_outside_a_strategy_and_the_view_candidates():
    labels = LABEL_SETS["random_5"]
    x = np.random.default_rng(4).normal(size=(20, 4)).astype("float32")
    for fn in FUNCTIONS.values():
        assert float(fn(labels, x, cross_replica=True)) == float(fn(labels, x))
    view = batch_view(labels, x, "euclidean")
    np.testing.assert_array_equal(view.candidates, x)
    np.testing.assert_array_equal(view.candidate_labels, labels)


def test_errors():
    with pytest.raises(ValueError, match="temperature must be a number > 0, got 0"):
        supervised_contrastive_loss([0, 0], np.ones((2, 2), "float32"), temperature=0)
    with pytest.raises(ValueError, match="alpha must be a number > 0, got -1"):
        multi_similarity_loss([0, 0], np.ones((2, 2), "float32"), alpha=-1)
    with pytest.raises(ValueError, match="gamma must be a number > 0, got True"):
        circle_loss([0, 0], np.ones((2, 2), "float32"), gamma=True)
    with pytest.raises(ValueError, match=r"loss 'circle' takes the settings \['gamma'\], got "
                       "unknown 'alpha'"):
        MetricLoss("circle", alpha=2.0)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_metric_loss_config_round_trip(name):
    settings = dict(SETTINGS[name][1])
    margin = settings.pop("margin", None)
    loss = MetricLoss(name, margin=margin, **settings)
    config = loss.get_config()
    assert {k: config[k] for k in settings} == settings
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert again.get_config() == config
    labels = LABEL_SETS["balanced_3x4"]
    x = np.random.default_rng(1).normal(size=(12, 4)).astype("float32")
    expected = _call_ref(name, labels, x, SETTINGS[name][1])
    assert float(again(labels, x)) == pytest.approx(expected, rel=1e-5)
