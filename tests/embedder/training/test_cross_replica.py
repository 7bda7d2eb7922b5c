"""Multi-replica training on 2 logical CPU devices: cross-replica mining and loss scaling.

TensorFlow's devices can only be split before TensorFlow is used, so the check runs in a
fresh interpreter (``SCRIPT``) and reports the weight updates of one SGD step (learning
rate 1: the update is minus the summed gradient) as JSON.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = r'''
import json, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
from embedder.losses import BatchHardTripletLoss
from embedder.training.trainer import InBatchTrainer

rng = np.random.default_rng(0)
x = rng.normal(size=(16, 5)).astype("float32")
y = np.tile(np.arange(4), 4).astype("int32")  # each half of the batch: 2 images per class
kernel = rng.normal(size=(5, 3)).astype("float32")
mirrored = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])


def encoder():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, use_bias=False)])
    model.layers[0].kernel.assign(kernel)
    return model


def step(strategy, rows, make_model):
    # One SGD step (learning rate 1) on the batch ``rows``; returns minus the update.
    with strategy.scope():
        model = make_model()
        model.compile(optimizer=keras.optimizers.SGD(1.0), run_eagerly=True)  # no tracing
    data = tf.data.Dataset.from_tensor_slices((x[rows], y[rows])).batch(16)
    model.fit(data, epochs=1, verbose=0)
    weights = [w for w in model.trainable_weights if tuple(w.shape) == kernel.shape]
    return (kernel - weights[0].numpy()).tolist()  # the encoder's kernel (not proxies)


single = tf.distribute.get_strategy()
everything, halves = slice(0, 16), (slice(0, 8), slice(8, 16))
out = {}
for loss in ("batch_all", "batch_hard", "semi_hard", "contrastive"):
    trainer = lambda cross, loss=loss: InBatchTrainer(encoder(), loss, cross_replica=cross)
    out[loss] = {
        "single": step(single, everything, lambda: trainer(False)),
        "cross": step(mirrored, everything, lambda: trainer(True)),
        "local": step(mirrored, everything, lambda: trainer(False)),
    }
    if loss in ("batch_hard", "contrastive"):
        out[loss]["halves"] = [step(single, h, lambda: trainer(False)) for h in halves]


for loss in ("multi_similarity", "supervised_contrastive", "circle", "proxy_anchor",
             "arcface"):
    def trainer(cross, loss=loss):
        keras.utils.set_random_seed(0)  # the same initial proxies in both runs
        return InBatchTrainer(encoder(), loss, cross_replica=cross, n_classes=4,
                              loss_params={"scale": 8.0} if loss == "arcface" else None)

    out[loss] = {"single": step(single, everything, lambda: trainer(False)),
                 "cross": step(mirrored, everything, lambda: trainer(True))}


def compiled(cross):
    model = encoder()
    model.compile(optimizer=keras.optimizers.SGD(1.0), run_eagerly=True,
                  loss=BatchHardTripletLoss(cross_replica=cross))
    return model


out["loss_class"] = {"single": step(single, everything, lambda: compiled(False)),
                     "cross": step(mirrored, everything, lambda: compiled(True))}
print("RESULT" + json.dumps(out))
'''


@pytest.fixture(scope="module")
def updates():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(s for s in done.stdout.splitlines() if s.startswith("RESULT"))
    return {k: {n: np.asarray(v) for n, v in d.items()} for k, d in json.loads(line[6:]).items()}


@pytest.mark.parametrize("loss", ["batch_all", "batch_hard", "semi_hard", "contrastive",
                                  "multi_similarity", "supervised_contrastive", "circle",
                                  "proxy_anchor", "arcface"])
def test_cross_replica_gradient_equals_single_device_gradient(updates, loss):
    got = updates[loss]
    assert np.abs(got["single"]).max() > 1e-3  # the step did something
    np.testing.assert_allclose(got["cross"], got["single"], atol=1e-5)


@pytest.mark.parametrize("loss", ["batch_hard", "contrastive"])
def test_local_mining_is_scaled_to_the_mean_over_replicas(updates, loss):
    # Without cross_replica each replica mines its own half; Keras sums the replicas'
    # gradients, so the loss must be divided by the replica count: the update is the mean
    # of the two half-batch gradients, not their sum.
    got = updates[loss]
    mean_of_halves = (got["halves"][0] + got["halves"][1]) / 2
    np.testing.assert_allclose(got["local"], mean_of_halves, atol=1e-5)
    assert np.abs(got["local"] - 2 * mean_of_halves).max() > 1e-3


@pytest.mark.parametrize("loss", ["batch_all", "batch_hard", "semi_hard"])
def test_local_mining_differs_from_the_global_batch(updates, loss):
    got = updates[loss]
    assert np.abs(got["local"] - got["single"]).max() > 1e-4


def test_loss_class_cross_replica_through_compile(updates):
    got = updates["loss_class"]
    np.testing.assert_allclose(got["cross"], got["single"], atol=1e-5)
