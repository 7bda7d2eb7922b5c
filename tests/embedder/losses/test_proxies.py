import numpy as np
import pytest
import tensorflow as tf

from embedder.losses import LOSSES, arcface_loss, in_batch_loss, proxy_anchor_loss
from embedder.losses.mining import batch_view
from tests import _references as ref

RNG = np.random.default_rng(0)
LABELS = {
    "balanced": [0, 0, 1, 1, 2, 2, 3, 3],
    "shuffled_some_absent": [3, 0, 3, 3, 0, 1],  # class 2 has no sample: P+ < P
    "one_each": [2, 0, 1, 3],
}


def _case(labels, per_class=1, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(labels), dim))
    proxies = rng.normal(size=(4 * per_class, dim))
    return np.array(labels), x, proxies


@pytest.mark.parametrize("labels", list(LABELS))
@pytest.mark.parametrize(("margin", "alpha"), [(0.1, 32.0), (0.3, 4.0)])
def test_proxy_anchor_matches_brute_force(labels, margin, alpha):
    y, x, proxies = _case(LABELS[labels])
    got = proxy_anchor_loss(y, x.astype("float32"), proxies.astype("float32"), margin,
                            alpha=alpha)
    expected = ref.proxy_anchor(y, x, proxies, margin, alpha)
    assert expected > 0.1
    np.testing.assert_allclose(float(got), expected, rtol=2e-5)


@pytest.mark.parametrize("labels", list(LABELS))
@pytest.mark.parametrize(("margin", "scale", "sub_centers"),
                         [(0.5, 64.0, 1), (0.2, 8.0, 3), (3.0, 4.0, 2)])  # 3.0: past pi
def test_arcface_matches_brute_force(labels, margin, scale, sub_centers):
    y, x, proxies = _case(LABELS[labels], sub_centers)
    got = arcface_loss(y, x.astype("float32"), proxies.astype("float32"), margin,
                       scale=scale, sub_centers=sub_centers)
    expected = ref.arcface(y, x, proxies, margin, scale, sub_centers)
    np.testing.assert_allclose(float(got), expected, rtol=2e-5, atol=1e-5)


def test_arcface_margin_zero_is_softmax_cross_entropy():
    y, x, proxies = _case(LABELS["balanced"])
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    logits = 2.0 * unit(x) @ unit(proxies).T
    expected = tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    got = arcface_loss(y, x.astype("float32"), proxies.astype("float32"), 0.0, scale=2.0)
    assert float(got) == pytest.approx(float(np.mean(expected)), rel=1e-5)


@pytest.mark.parametrize("name", ["proxy_anchor", "arcface"])
def test_gradients_match_finite_differences(name):
    y, x0, p0 = _case(LABELS["shuffled_some_absent"], 2 if name == "arcface" else 1, 3)
    settings = ({"alpha": 4.0} if name == "proxy_anchor"
                else {"scale": 4.0, "sub_centers": 2})
    fn = {"proxy_anchor": proxy_anchor_loss, "arcface": arcface_loss}[name]
    reference = {"proxy_anchor": ref.proxy_anchor, "arcface": ref.arcface}[name]
    x, p = tf.Variable(x0.astype("float32")), tf.Variable(p0.astype("float32"))
    with tf.GradientTape() as tape:
        loss = fn(y, x, p, 0.2, **settings)
    grads = [g.numpy() for g in tape.gradient(loss, [x, p])]
    eps = 1e-5
    for which, (value, grad) in enumerate(zip((x0, p0), grads, strict=True)):
        numeric = np.zeros_like(value)
        for index in np.ndindex(*value.shape):
            step = np.zeros_like(value)
            step[index] = eps
            args = [[x0, p0], [x0, p0]]
            args[0][which], args[1][which] = value + step, value - step
            numeric[index] = (reference(y, args[0][0], args[0][1], 0.2, *settings.values())
                              - reference(y, args[1][0], args[1][1], 0.2,
                                          *settings.values())) / (2 * eps)
        assert np.abs(numeric).max() > 1e-3
        np.testing.assert_allclose(grad, numeric, atol=1e-3, rtol=1e-2)


def test_in_batch_loss_passes_the_proxies_and_needs_them():
    y, x, proxies = _case(LABELS["balanced"])
    view = batch_view(y, x.astype("float32"), "euclidean")
    loss, terms = in_batch_loss("arcface", view, 0.5, {"scale": 8.0}, proxies.astype("float32"))
    assert float(loss) == pytest.approx(ref.arcface(y, x, proxies, 0.5, 8.0), rel=1e-5)
    assert float(terms.count) == len(y)
    with pytest.raises(ValueError, match="loss 'proxy_anchor' trains class proxies: pass "
                       r"proxies= \(the trainer creates them\)"):
        in_batch_loss("proxy_anchor", view, 0.1)


def test_registered_proxy_shapes():
    assert LOSSES["proxy_anchor"].proxy_shape(7, 16, alpha=32.0) == (7, 16)
    assert LOSSES["arcface"].proxy_shape(7, 16, scale=64.0, sub_centers=3) == (21, 16)
    assert not LOSSES["batch_all"].has_proxies
