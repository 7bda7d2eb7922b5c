"""Property test: every loss x distance is finite, with finite gradients, for any finite
batch: shapes, dtypes (float16/bfloat16/float32), magnitudes 1e-30..1e30 and degenerate
label patterns (DESIGN 3: "finite for every finite input, or raises; never NaN")."""

import numpy as np
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from embedder.distances import DISTANCES
from embedder.losses import (
    arcface_loss,
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
    circle_loss,
    contrastive_loss,
    multi_similarity_loss,
    proxy_anchor_loss,
    semi_hard_triplet_loss,
    supervised_contrastive_loss,
    triplet_loss,
)

LOSSES = {
    "batch_all": batch_all_triplet_loss,
    "batch_hard": batch_hard_triplet_loss,
    "soft_batch_hard": lambda y, x, m, d: batch_hard_triplet_loss(y, x, m, d, soft=True),
    "semi_hard": semi_hard_triplet_loss,
    "contrastive": contrastive_loss,
    "triplet": lambda y, x, m, d: triplet_loss(x, x[::-1], tf.roll(x, 1, 0), m, d),
}
# Cosine-similarity losses: ``distance`` does not change them, so one is fuzzed. The
# margin-less ones ignore m; the proxy losses get float32 proxies from a fixed draw.
SIMILARITY_LOSSES = {
    "multi_similarity": lambda y, x, m, d: multi_similarity_loss(y, x, m, d),
    "supervised_contrastive": lambda y, x, m, d: supervised_contrastive_loss(y, x, m, d),
    "circle": circle_loss,
    "proxy_anchor": lambda y, x, m, d: proxy_anchor_loss(y, x, _proxies(x), m, d),
    "arcface": lambda y, x, m, d: arcface_loss(y, x, _proxies(x, 2), m, d, sub_centers=2),
}


def _proxies(x, per_class=1):
    # one row per class id of ``batches`` (ids < 10), on the scale of the batch
    rows = np.random.default_rng(1).normal(size=(10 * per_class, x.shape[1]))
    return tf.constant(rows, "float32")
# Largest power of ten whose normal draws (|z| < 6) stay finite in each dtype.
MAX_EXPONENT = {"float16": 3, "bfloat16": 30, "float32": 30}


@st.composite
def batches(draw):
    dtype = draw(st.sampled_from(sorted(MAX_EXPONENT)))
    n, dim = draw(st.integers(1, 10)), draw(st.integers(1, 6))
    exponent = draw(st.integers(-30, MAX_EXPONENT[dtype]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.normal(size=(n, dim)) * 10.0**exponent
    rows = draw(st.sampled_from(["random", "duplicated", "zeros", "one_huge_row"]))
    if rows == "duplicated":
        x[1::2] = x[::2][: len(x[1::2])]
    elif rows == "zeros":
        x[:] = 0.0
    elif rows == "one_huge_row":
        x[0] *= 10.0 ** (MAX_EXPONENT[dtype] - exponent)
    pattern = draw(st.sampled_from(["same", "distinct", "few"]))
    labels = {"same": np.zeros(n), "distinct": np.arange(n),
              "few": rng.integers(0, 3, size=n)}[pattern].astype("int32")  # fmt: skip
    if draw(st.booleans()):
        labels = labels[:, None]
    margin = draw(st.sampled_from([0.0, 0.2, 1.0, 1e6]))
    return labels, tf.cast(x.astype("float32"), dtype), margin


@settings(max_examples=20, deadline=None, derandomize=True)
@given(batches())
def test_losses_finite_with_finite_gradients(batch):
    labels, x, margin = batch
    x32 = tf.cast(x, "float32")
    cases = [(n, fn, d) for n, fn in LOSSES.items() for d in DISTANCES]
    cases += [(n, fn, "cosine") for n, fn in SIMILARITY_LOSSES.items()]
    for name, fn, distance in cases:
        value = fn(labels, x, margin, distance)
        assert value.dtype == "float32"
        assert np.isfinite(float(value)), (name, distance)
        with tf.GradientTape() as tape:
            tape.watch(x32)
            loss = fn(labels, x32, margin, distance)
        grad = tape.gradient(loss, x32)
        assert np.isfinite(float(loss)) and float(loss) == float(value), (name, distance)
        assert grad is not None and np.all(np.isfinite(grad.numpy())), (name, distance)
