import keras
import numpy as np
import pytest
import tensorflow as tf

from embedder.losses import mining
from embedder.losses.mining import batch_view
from embedder.training.diagnostics import DIAGNOSTICS, DiagnosticsMean, batch_diagnostics
from embedder.training.trainer import InBatchTrainer
from tests import _references as ref

LABELS = np.array([0, 0, 1, 1, 1, 2])


def batch(seed, n=6, dim=3):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype("float32")


def diagnostics(labels, x, margin=0.2, distance="euclidean"):
    view = batch_view(labels, x, distance)
    return {k: (float(v), float(w)) for k, (v, w) in batch_diagnostics(view, margin).items()}


# ---------------------------------------------------------------- batch_diagnostics


@pytest.mark.parametrize("distance", ["euclidean", "squared", "cosine"])
@pytest.mark.parametrize("labels", [LABELS, np.arange(6), np.zeros(6, int)], ids=str)
def test_diagnostics_match_brute_force(labels, distance):
    x = batch(1)
    got = diagnostics(labels, x, 0.5, distance)
    expected = ref.diagnostics(labels, x, 0.5, distance)
    assert list(got) == list(DIAGNOSTICS)
    for name, value in expected.items():
        # A batch without anything to measure has weight 0, so a running mean skips it.
        assert got[name][1] == (0.0 if value is None else 1.0), name
        if value is not None:
            assert got[name][0] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_diagnostics_literal_values():
    x = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]], dtype="float32")
    got = diagnostics([0, 0, 1], x, margin=0.0)
    # triplets (0,1,2): 5 - 1 > 0 and (1,0,2): 5 - sqrt(18) > 0; negatives 1, 1, sqrt(18) x2
    assert {k: v for k, (v, _) in got.items()} == pytest.approx({
        "active_fraction": 1.0, "pos_distance": 5.0, "neg_distance": (2 + 2 * np.sqrt(18)) / 4,
        "norm_mean": 2.0, "norm_std": np.sqrt(14 / 3),
    })  # fmt: skip
    assert {w for _, w in got.values()} == {1.0}


def test_diagnostics_reuse_the_batch_all_terms():
    view = batch_view(LABELS, batch(2), "euclidean")
    got = batch_diagnostics(view, 0.2, (tf.constant(0.0), tf.constant(3.0), tf.constant(4.0)))
    assert float(got["active_fraction"][0]) == 0.75


def test_diagnostics_mean_running_means_skips_and_resets():
    metric = DiagnosticsMean()
    x1, x2 = batch(1), batch(2) * 2.0
    metric.update_state(batch_diagnostics(batch_view(LABELS, x1, "squared"), 0.5))
    metric.update_state(batch_diagnostics(batch_view(np.arange(6), x2, "squared"), 0.5))
    first, second = ref.diagnostics(LABELS, x1, 0.5, "squared"), ref.diagnostics(
        np.arange(6), x2, 0.5, "squared")
    got = {k: float(v) for k, v in metric.result().items()}
    assert list(got) == list(DIAGNOSTICS)
    for name in DIAGNOSTICS:  # the second batch has no positive pair: skipped there
        values = [v for v in (first[name], second[name]) if v is not None]
        assert got[name] == pytest.approx(np.mean(values), rel=1e-5), name
    metric.reset_state()
    assert {float(v) for v in metric.result().values()} == {0.0}


# ---------------------------------------------------------------- InBatchTrainer

Y = np.repeat([0, 1, 2, 3], 4)


def encoder(dtype=None, dim=6, regularizer=None):
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((dim,)),
        keras.layers.Dense(3, dtype=dtype, kernel_regularizer=regularizer),
    ])  # fmt: skip


def inputs(seed=5):
    return (np.random.default_rng(seed).normal(size=(16, 6)) + Y[:, None]).astype("float32")


@pytest.mark.parametrize(
    ("loss", "settings"),
    [("batch_all", {}), ("batch_hard", {"loss_params": {"soft": True}, "margin": 0.3}),
     ("semi_hard", {"distance": "cosine"}), ("contrastive", {"distance": "squared"})],
)  # fmt: skip
def test_trainer_logs_loss_and_diagnostics_of_the_batch(loss, settings):
    x = inputs()
    trainer = InBatchTrainer(encoder(), loss, **settings)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))  # weights stay put
    history = trainer.fit(x, Y, batch_size=16, epochs=2, verbose=0).history
    assert sorted(history) == sorted(["loss", *DIAGNOSTICS])
    embeddings = trainer.encoder.predict(x, verbose=0)
    margin = settings.get("margin", 0.5 if loss == "contrastive" else 0.2)
    distance = settings.get("distance", "euclidean")
    args = (margin, distance, True) if loss == "batch_hard" else (margin, distance)
    expected_loss = ref.LOSSES[loss](Y, embeddings, *args)
    expected = ref.diagnostics(Y, embeddings, margin, distance)
    assert history["loss"] == pytest.approx([expected_loss] * 2, rel=1e-4)
    for name in DIAGNOSTICS:
        assert history[name] == pytest.approx([expected[name]] * 2, rel=1e-4), name


def test_trainer_same_under_xla():
    # XLA runs the dense (A, C, C) batch-all; TensorFlow graphs each anchor's positives only.
    logs = []
    for jit_compile in (False, True):
        trainer = InBatchTrainer(encoder(), "batch_hard")  # batch-all for active_fraction
        trainer.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=jit_compile)
        assert trainer.jit_compile is jit_compile
        logs.append(trainer.train_on_batch(inputs(), Y, return_dict=True))
    assert logs[0] == pytest.approx(logs[1], rel=1e-5)


def test_trainer_computes_one_distance_matrix_per_step(monkeypatch):
    calls = []
    original = mining.pairwise_distances
    monkeypatch.setattr(mining, "pairwise_distances",
                        lambda *a, **k: calls.append(1) or original(*a, **k))  # fmt: skip
    trainer = InBatchTrainer(encoder(), "batch_all")
    trainer.compile(optimizer="sgd", run_eagerly=True)
    trainer.train_on_batch(inputs(), Y)
    assert len(calls) == 1


def test_trainer_half_precision_output_and_regularizers():
    x = inputs()
    trainer = InBatchTrainer(encoder("mixed_float16", regularizer=keras.regularizers.L2(1.0)))
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = trainer.train_on_batch(x, Y, return_dict=True)
    assert trainer.encoder.outputs[0].dtype == "float16"
    embeddings = trainer.encoder.predict(x, verbose=0).astype("float32")
    penalty = float(np.sum(np.square(trainer.encoder.layers[0].kernel.numpy())))
    expected = ref.batch_all(Y, embeddings, 0.2, "euclidean") + penalty
    assert logs["loss"] == pytest.approx(expected, rel=1e-3)
    assert all(np.isfinite(v) for v in logs.values())


def test_trainer_trains_and_evaluates():
    trainer = InBatchTrainer(encoder(), "batch_hard", margin=0.5)
    trainer.compile(optimizer=keras.optimizers.Adam(0.05))
    history = trainer.fit(inputs(), Y, batch_size=16, epochs=8, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    logs = trainer.evaluate(inputs(), Y, batch_size=16, verbose=0, return_dict=True)
    assert sorted(logs) == sorted(["loss", *DIAGNOSTICS])


def test_trainer_config_and_errors():
    trainer = InBatchTrainer(encoder(), "contrastive", distance="cosine", cross_replica=True)
    assert (trainer.margin, trainer.distance, trainer.loss_params) == (0.5, "cosine", {})
    config = trainer.get_config()
    restored = InBatchTrainer.from_config(config)
    assert {k: v for k, v in restored.get_config().items() if k != "encoder"} == {
        k: v for k, v in config.items() if k != "encoder"}
    with pytest.raises(ValueError, match=r"loss must be an in-batch loss \['batch_all', "
                       r"'batch_hard', 'semi_hard', 'contrastive', 'multi_similarity', "
                       r"'supervised_contrastive', 'circle', 'proxy_anchor', 'arcface'\], "
                       "got 'triplet'"):
        InBatchTrainer(encoder(), "triplet")
    with pytest.raises(ValueError, match=r"loss 'batch_all' takes the settings \[\], got "
                       r"unknown 'soft'"):
        InBatchTrainer(encoder(), loss_params={"soft": True})
    with pytest.raises(TypeError, match=r"cross_replica must be True or False, got None"):
        InBatchTrainer(encoder(), cross_replica=None)
    with pytest.raises(ValueError, match=r"margin must be a finite number >= 0, got -1"):
        InBatchTrainer(encoder(), margin=-1)
