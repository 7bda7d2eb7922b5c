import keras
import numpy as np
import pytest
import tensorflow as tf

from embedder.losses import BatchHardTripletLoss
from embedder.training_metrics import (
    ActiveTripletFraction,
    EmbeddingNormMean,
    EmbeddingNormStd,
    MeanNegativeDistance,
    MeanPositiveDistance,
)
from tests.embedder.test_distances import reference_pairwise
from tests.embedder.test_losses import ref_batch_all

LABELS = np.array([0, 0, 1, 1, 1, 2])


def batch(seed, n=6, dim=3):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype("float32")


def ref_pair_mean(labels, x, distance, positive):
    d = reference_pairwise(x, distance)
    same = labels[:, None] == labels[None]
    mask = (same & ~np.eye(len(labels), dtype=bool)) if positive else ~same
    return d[mask].mean()


def ref_norms(x):
    return np.linalg.norm(x.astype(np.float64), axis=1)


REFERENCES = {
    "active_fraction": lambda y, x: ref_batch_all(y, x, 0.5, "cosine", fraction=True),
    "pos_distance": lambda y, x: ref_pair_mean(y, x, "squared", True),
    "neg_distance": lambda y, x: ref_pair_mean(y, x, "euclidean", False),
    "norm_mean": lambda y, x: ref_norms(x).mean(),
    "norm_std": lambda y, x: ref_norms(x).std(),
}


def make_metrics():
    return [
        ActiveTripletFraction(margin=0.5, distance="cosine"),
        MeanPositiveDistance(distance="squared"),
        MeanNegativeDistance(),
        EmbeddingNormMean(),
        EmbeddingNormStd(),
    ]


@pytest.mark.parametrize("index", range(5))
def test_running_mean_over_batches_matches_reference(index):
    metric = make_metrics()[index]
    reference = REFERENCES[metric.name]
    x1, x2 = batch(1), batch(2, dim=3) * 2.0
    metric.update_state(LABELS, x1)
    np.testing.assert_allclose(float(metric.result()), reference(LABELS, x1), rtol=1e-5)
    metric.update_state(LABELS[:, None].astype("float32"), x2)
    expected = (reference(LABELS, x1) + reference(LABELS, x2)) / 2
    np.testing.assert_allclose(float(metric.result()), expected, rtol=1e-5)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_literal_values():
    y = [0, 0, 1]
    x = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]], dtype="float32")
    values = {}
    for metric in make_metrics()[1:]:
        metric.update_state(y, x)
        values[metric.name] = float(metric.result())
    # positives: 25 (squared); negatives: 1, 1, sqrt(18), sqrt(18); norms 0, 5, 1
    assert values == pytest.approx(
        {
            "pos_distance": 25.0,
            "neg_distance": (2 + 2 * np.sqrt(18)) / 4,
            "norm_mean": 2.0,
            "norm_std": np.sqrt(14 / 3),
        }
    )
    fraction = ActiveTripletFraction(margin=0.0)
    # triplets (0,1,2): 5 - 1 > 0 and (1,0,2): 5 - sqrt(18) > 0
    fraction.update_state(y, x)
    assert float(fraction.result()) == 1.0


def test_batches_without_pairs_are_skipped():
    x = batch(3)
    fraction, positive = ActiveTripletFraction(), MeanPositiveDistance()
    for metric in (fraction, positive):
        metric.update_state(np.arange(6), x)  # no positive pair, no valid triplet
    assert float(fraction.result()) == 0.0 and float(positive.result()) == 0.0
    negative = MeanNegativeDistance()
    negative.update_state(np.zeros(6), x)  # single class: no negative pair
    negative.update_state(LABELS, x)
    assert float(negative.result()) == pytest.approx(ref_pair_mean(LABELS, x, "euclidean", False))


def test_string_labels_and_half_precision():
    x = batch(4)
    metric, reference = MeanPositiveDistance(), MeanPositiveDistance()
    metric.update_state(tf.constant(LABELS.astype(str)), tf.cast(x, "float16"))
    reference.update_state(LABELS, tf.cast(tf.cast(x, "float16"), "float32"))
    assert float(metric.result()) == pytest.approx(float(reference.result()))


@pytest.mark.parametrize("index", range(5))
def test_config_round_trip(index):
    metric = make_metrics()[index]
    config = metric.get_config()
    assert config["name"] == metric.name
    restored = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert type(restored) is type(metric) and restored.get_config() == config
    assert type(metric).from_config(config).get_config() == config


def test_default_names_and_settings():
    assert [m.name for m in make_metrics()] == list(REFERENCES)
    config = ActiveTripletFraction().get_config()
    assert (config["margin"], config["distance"]) == (0.2, "euclidean")
    with pytest.raises(ValueError, match=r"margin must be a finite number >= 0, got -1"):
        ActiveTripletFraction(margin=-1)
    with pytest.raises(ValueError, match=r"distance must be one of"):
        MeanNegativeDistance(distance="hamming")
    with pytest.raises(ValueError, match=r"y_pred must be a 2-D tensor"):
        EmbeddingNormMean().update_state(None, np.zeros((2, 2, 2)))


def test_metrics_logged_by_fit(tmp_path):
    y = np.repeat([0, 1, 2, 3], 4)
    x = (np.random.default_rng(5).normal(size=(16, 6)) + y[:, None]).astype("float32")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss=BatchHardTripletLoss(), metrics=make_metrics())
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert set(REFERENCES) <= set(history)
    assert all(len(history[name]) == 2 for name in REFERENCES)
    assert 0.0 <= history["active_fraction"][-1] <= 1.0
    # The metrics survive saving the compiled model.
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    logs = loaded.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    expected = EmbeddingNormMean()
    expected.update_state(y, loaded.predict(x, verbose=0))
    assert logs["norm_mean"] == pytest.approx(float(expected.result()), rel=1e-5)
