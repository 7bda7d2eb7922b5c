"""The cross-batch memory: the loss over batch + memory, FIFO order, warm-up, gradients
through the batch only, saved with the training model's weights, consistent replicas."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from embedder.training.trainer import InBatchTrainer
from tests import _references as ref

ROOT = Path(__file__).resolve().parents[3]
RNG = np.random.default_rng(0)
X = RNG.normal(size=(24, 5)).astype("float32")
Y = np.array([0, 1, 2, 3, 0, 1, 2, 3] * 3, dtype="int32")
KERNEL = RNG.normal(size=(5, 3)).astype("float32")


def encoder():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, use_bias=False)])
    model.layers[0].kernel.assign(KERNEL)
    return model


def trainer(loss="batch_hard", rate=0.0, **settings):
    model = InBatchTrainer(encoder(), loss, **settings)
    model.compile(optimizer=keras.optimizers.SGD(rate), run_eagerly=True)
    return model


def _ref_loss(loss, labels, x, margin, n_anchors):
    name = {"soft_batch_hard": "batch_hard"}.get(loss, loss)
    return ref.LOSSES[name](labels, x, margin, "euclidean", n_anchors=n_anchors)


@pytest.mark.parametrize(("loss", "margin"), [
    ("batch_all", 0.5), ("batch_hard", 0.5), ("contrastive", 1.0), ("multi_similarity", None),
    ("supervised_contrastive", None), ("circle", 0.4)])  # fmt: skip
def test_loss_over_batch_and_memory_equals_brute_force(loss, margin):
    model = trainer(loss, margin=margin, memory_size=16)
    first, second, third = X[:8], X[8:16], X[16:]
    model.train_on_batch(first, Y[:8])
    model.train_on_batch(second, Y[8:16])
    got = model.train_on_batch(third, Y[16:], return_dict=True)["loss"]
    embed = lambda x: x @ KERNEL  # noqa: E731 - the encoder, unchanged at rate 0
    # anchors: the batch; candidates: the batch, then the memory's rows (older batches)
    rows = np.concatenate([embed(third), embed(first), embed(second)]).astype(np.float64)
    labels = np.concatenate([Y[16:], Y[:8], Y[8:16]])
    expected = _ref_loss(loss, labels, rows, margin, n_anchors=8)
    without = _ref_loss(loss, Y[16:], embed(third).astype(np.float64), margin, None)
    assert abs(expected - without) > 1e-3  # the memory changes the loss
    assert got == pytest.approx(expected, rel=1e-4)


def test_fifo_order_warmup_and_a_batch_larger_than_the_memory():
    model = trainer(memory_size=6, memory_warmup=2)
    memory = model.memory
    assert not np.asarray(memory.valid()).any()
    model.train_on_batch(X[:4], Y[:4])
    model.train_on_batch(X[4:8], Y[4:8])
    # rows 0..3 <- batch 1, then rows 4, 5, 0, 1 <- batch 2
    order = [6, 7, 2, 3, 4, 5]
    np.testing.assert_array_equal(memory.labels.numpy(), Y[order])
    np.testing.assert_allclose(memory.embeddings.numpy(), X[order] @ KERNEL, rtol=1e-5)
    assert memory.counters.numpy().tolist() == [6, 2, 2]
    assert np.asarray(memory.valid()).all()  # two steps done: warm-up over
    small = trainer(memory_size=3)
    small.train_on_batch(X[:4], Y[:4])
    np.testing.assert_array_equal(small.memory.labels.numpy(), Y[1:4])
    assert small.memory.counters.numpy().tolist() == [3, 0, 1]


def test_warmup_steps_mine_the_batch_only():
    plain = trainer()
    warm = trainer(memory_size=16, memory_warmup=2)
    for rows in (slice(0, 8), slice(8, 16)):
        assert warm.train_on_batch(X[rows], Y[rows]) == pytest.approx(
            plain.train_on_batch(X[rows], Y[rows]))
    assert warm.train_on_batch(X[16:], Y[16:]) != pytest.approx(
        plain.train_on_batch(X[16:], Y[16:]))


def test_gradient_flows_through_the_batch_only():
    # One SGD step at rate 1 moves the kernel by minus the gradient of the loss over
    # batch + memory with the memory's rows held constant (finite differences of the
    # brute-force reference).
    model = trainer("batch_hard", rate=1.0, margin=0.5, memory_size=8)
    model.memory.enqueue(X[:8] @ KERNEL, Y[:8])
    memory_rows = model.memory.embeddings.numpy().astype(np.float64)
    before = model.encoder.layers[0].kernel.numpy().astype(np.float64)
    model.train_on_batch(X[8:16], Y[8:16])
    update = before - model.encoder.layers[0].kernel.numpy()
    labels = np.concatenate([Y[8:16], Y[:8]])

    def loss(kernel):
        rows = np.concatenate([X[8:16] @ kernel, memory_rows])
        return ref.batch_hard(labels, rows, 0.5, "euclidean", n_anchors=8)

    numeric, eps = np.zeros_like(before), 1e-5
    for index in np.ndindex(*before.shape):
        step = np.zeros_like(before)
        step[index] = eps
        numeric[index] = (loss(before + step) - loss(before - step)) / (2 * eps)
    assert np.abs(numeric).max() > 1e-2
    np.testing.assert_allclose(update, numeric, atol=1e-4, rtol=1e-3)


def test_memory_is_training_state_saved_with_the_model_weights(tmp_path):
    model = trainer(memory_size=12)
    model.train_on_batch(X[:8], Y[:8])
    assert len(model.encoder.weights) == 1  # the encoder holds only its kernel
    path = tmp_path / "trainer.weights.h5"
    model.save_weights(path)
    again = trainer(memory_size=12)
    again.build((None, 5))  # as the training run builds it for BackupAndRestore
    again.load_weights(path)
    for mine, theirs in zip(model.memory.weights, again.memory.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    config = model.get_config()
    assert (config["memory_size"], config["memory_warmup"]) == (12, 0)
    assert InBatchTrainer.from_config(config).get_config() == config


def test_memory_errors():
    with pytest.raises(ValueError, match="memory_size applies to pair losses, not to the proxy "
                       "loss 'arcface'; got memory_size=8"):
        InBatchTrainer(encoder(), "arcface", n_classes=4, memory_size=8)


def test_estimator_trains_with_memory():
    from tests._helpers import TINY_SHAPE, tiny_embedder
    from tests._images import make_shapes

    X_img, y = make_shapes(n_per_class=6, size=TINY_SHAPE[0], n_classes=4)
    fitted = tiny_embedder(loss="multi_similarity", memory_size=24, memory_warmup_epochs=0.5,
                           epochs=2, validation_fraction=0.0, samples_per_class=2).fit(X_img, y)
    assert fitted.config_.memory_size == 24
    assert np.isfinite(fitted.history_["loss"]).all()


SCRIPT = r'''
import json, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
from embedder.training.trainer import InBatchTrainer

rng = np.random.default_rng(0)
x = rng.normal(size=(48, 5)).astype("float32")
y = np.tile(np.arange(4), 12).astype("int32")
kernel = rng.normal(size=(5, 3)).astype("float32")
mirrored = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])


def run(strategy, cross):
    with strategy.scope():
        encoder = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, use_bias=False)])
        encoder.layers[0].kernel.assign(kernel)
        model = InBatchTrainer(encoder, "batch_hard", margin=0.5, cross_replica=cross,
                               memory_size=24)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # 3 steps, 8 rows a replica
    model.fit(data, epochs=1, verbose=0, shuffle=False)
    memory = [[v.numpy().tolist() for v in strategy.experimental_local_results(w.value)]
              for w in model.memory.weights]
    return {"kernel": model.encoder.layers[0].kernel.numpy().tolist(), "memory": memory}


out = {"single": run(tf.distribute.get_strategy(), False), "cross": run(mirrored, True),
       "local": run(mirrored, False)}
print("RESULT" + json.dumps(out))
'''


@pytest.fixture(scope="module")
def replicas():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(s for s in done.stdout.splitlines() if s.startswith("RESULT"))
    return json.loads(line[6:])


def test_cross_replica_memory_matches_a_single_device(replicas):
    single, cross = replicas["single"], replicas["cross"]
    rng = np.random.default_rng(0)
    rng.normal(size=(48, 5))
    start = rng.normal(size=(5, 3))  # the script's initial kernel
    assert np.abs(np.subtract(single["kernel"], start)).max() > 1e-3
    np.testing.assert_allclose(cross["kernel"], single["kernel"], atol=1e-5)
    for mine, theirs in zip(cross["memory"], single["memory"], strict=True):
        assert len(mine) == 2  # one copy per replica, each the global rows
        np.testing.assert_allclose(mine[0], theirs[0], atol=1e-5)
        np.testing.assert_allclose(mine[1], theirs[0], atol=1e-5)


def test_every_replica_holds_the_global_rows_without_cross_replica_mining(replicas):
    for copies in replicas["local"]["memory"]:
        np.testing.assert_array_equal(copies[0], copies[1])
    assert replicas["local"]["memory"][2][0] == [24, 0, 3]  # 16 global rows a step, FIFO
    labels = np.asarray(replicas["local"]["memory"][1][0])
    np.testing.assert_array_equal(labels, np.tile(np.arange(4), 6))

