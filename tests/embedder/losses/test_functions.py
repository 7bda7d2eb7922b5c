import keras
import numpy as np
import pytest
import tensorflow as tf

from embedder.distances import DISTANCES
from embedder.losses import (
    LOSSES,
    BatchAllTripletLoss,
    BatchHardTripletLoss,
    ContrastiveLoss,
    OfflineTripletLoss,
    SemiHardTripletLoss,
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
    contrastive_loss,
    default_margin,
    get_loss,
    semi_hard_triplet_loss,
    triplet_loss,
)
from tests import _references as ref

FUNCTIONS = {
    "batch_all": (batch_all_triplet_loss, ref.batch_all),
    "batch_hard": (batch_hard_triplet_loss, ref.batch_hard),
    "semi_hard": (semi_hard_triplet_loss, ref.semi_hard),
    "contrastive": (contrastive_loss, ref.contrastive),
    "soft_batch_hard": (
        lambda *args, **kw: batch_hard_triplet_loss(*args, soft=True, **kw),
        lambda *args: ref.batch_hard(*args, soft=True),
    ),
}
TRIPLET_LOSSES = ["batch_all", "batch_hard", "semi_hard", "soft_batch_hard"]
# Every registered loss a Keras Loss can hold (proxy losses need the trainer's weights).
KERAS_LOSSES = [name for name, spec in LOSSES.items() if not spec.has_proxies]

LABEL_SETS = {
    "balanced_3x4": [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2],
    "singletons": [0, 0, 0, 1, 1, 2, 3, 4, 5, 5, 5, 5],
    "two_uneven": [1, 1, 1, 1, 1, 0, 0],
    "random_5": list(np.random.default_rng(7).integers(0, 5, size=20)),
}

# ---------------------------------------------------------------- agreement with references


@pytest.mark.parametrize("labels", list(LABEL_SETS), ids=str)
@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_matches_brute_force(name, distance, labels):
    labels = np.array(LABEL_SETS[labels])
    rng = np.random.default_rng(len(labels) + len(name))
    x = rng.normal(size=(len(labels), 5)).astype("float32")
    margin = 0.3 if distance == "cosine" else 1.0  # several triplets active, several not
    fn, ref = FUNCTIONS[name]
    got = fn(labels, x, margin, distance)
    assert got.dtype == "float32" and tuple(got.shape) == ()
    np.testing.assert_allclose(float(got), ref(labels, x, margin, distance), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("distance", DISTANCES)
def test_offline_triplet_matches_brute_force(distance):
    a, p, n = np.random.default_rng(11).normal(size=(3, 8, 4)).astype("float32")
    expected = ref.offline_triplet(a, p, n, 0.5, distance)
    got = triplet_loss(a, p, n, margin=0.5, distance=distance)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- literal values

LITERAL_LABELS = [0, 0, 1, 1]
LITERAL_X = np.array([[0.0], [2.0], [1.0], [5.0]], dtype="float32")


@pytest.mark.parametrize(
    ("fn", "kwargs", "expected"),
    [
        # hinges 2, 2, 4, 4, 2 of 8 valid triplets are positive
        (batch_all_triplet_loss, {"margin": 1.0}, 14 / 5),
        # per anchor max(hp - hn + 1, 0) = 2, 2, 4, 2
        (batch_hard_triplet_loss, {"margin": 1.0}, 2.5),
        # soft: log1p(exp(hp - hn)) with gaps 1, 1, 3, 1; the margin is not used
        (batch_hard_triplet_loss, {"margin": 1.0, "soft": True}, 1.7470931035),
        (batch_hard_triplet_loss, {"margin": 0.0, "soft": True}, 1.7470931035),
        # pairs (0,1): 5 -> 0; (1,0): 3 -> 0; (2,3): fallback 1 -> 4; (3,2): 5 -> 0
        (semi_hard_triplet_loss, {"margin": 1.0}, 1.0),
        # 0.5 * (4 + 4 + 16 + 16 + 4 * 1.5**2) / 12
        (contrastive_loss, {"margin": 2.5}, 49 / 24),
        # squared: hinges 4, 4, 16, 16, 8 positive
        (batch_all_triplet_loss, {"margin": 1.0, "distance": "squared"}, 48 / 5),
    ],
)
def test_literal_values(fn, kwargs, expected):
    np.testing.assert_allclose(float(fn(LITERAL_LABELS, LITERAL_X, **kwargs)), expected, 1e-6)


def test_offline_triplet_literal():
    a = np.array([[0.0, 0.0], [1.0, 1.0]])
    p = np.array([[3.0, 4.0], [1.0, 1.0]])
    n = np.array([[1.0, 0.0], [4.0, 5.0]])
    # d_ap = 5, 0 and d_an = 1, 5: hinges 4.2 and 0
    np.testing.assert_allclose(float(triplet_loss(a, p, n)), 2.1, rtol=1e-6)
    np.testing.assert_allclose(float(triplet_loss(a[:0], p[:0], n[:0])), 0.0)


def test_default_margins_and_positional_use():
    assert [default_margin(k) for k in LOSSES][:5] == [0.2, 0.2, 0.2, 0.5, 0.2]
    x = LITERAL_X
    assert float(batch_hard_triplet_loss(LITERAL_LABELS, x)) == pytest.approx(
        ref.batch_hard(LITERAL_LABELS, x, 0.2, "euclidean"), rel=1e-6
    )
    assert float(contrastive_loss(LITERAL_LABELS, x, 0.5, "squared")) == pytest.approx(
        ref.contrastive(LITERAL_LABELS, x, 0.5, "squared"), rel=1e-6
    )


# ---------------------------------------------------------------- degenerate batches

ALL_FUNCTIONS = [fn for fn, _ in FUNCTIONS.values()]


@pytest.mark.parametrize("name", TRIPLET_LOSSES)
@pytest.mark.parametrize("labels", [[0, 1, 2, 3, 4, 5], [2, 2, 2, 2, 2, 2], [7]])
def test_no_valid_triplet_gives_zero(name, labels):
    x = np.random.default_rng(0).normal(size=(len(labels), 3)).astype("float32")
    assert float(FUNCTIONS[name][0](labels, x)) == 0.0


def test_contrastive_without_pairs_of_one_kind():
    # Only the negative (or only the positive) term remains; a single row gives 0.
    x = np.array([[0.0], [0.1], [3.0]], dtype="float32")
    np.testing.assert_allclose(
        float(contrastive_loss([0, 1, 2], x)), 0.5 * 2 * 0.4**2 / 6, rtol=1e-6
    )
    np.testing.assert_allclose(
        float(contrastive_loss([1, 1, 1], x)), 0.5 * 2 * (0.01 + 9 + 2.9**2) / 6, rtol=1e-6
    )
    assert float(contrastive_loss([0], x[:1])) == 0.0


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("case", ["duplicated", "identical", "zeros"])
@pytest.mark.parametrize("fn", ALL_FUNCTIONS, ids=list(FUNCTIONS))
def test_finite_loss_and_gradients(fn, case, distance):
    base = np.random.default_rng(1).normal(size=(4, 3))
    x = {
        "duplicated": np.concatenate([base, base]),
        "identical": np.ones((8, 3)),
        "zeros": np.zeros((8, 3)),
    }[case]
    x = tf.Variable(x.astype("float32"))
    with tf.GradientTape() as tape:
        loss = fn([0, 0, 1, 1, 0, 0, 1, 1], x, 0.2, distance)
    grad = tape.gradient(loss, x)
    assert np.isfinite(float(loss))
    assert grad is not None and np.all(np.isfinite(grad.numpy()))


@pytest.mark.parametrize("distance", DISTANCES)
def test_offline_triplet_finite_gradients(distance):
    x = tf.Variable(np.zeros((3, 4, 2), dtype="float32"))
    with tf.GradientTape() as tape:
        loss = triplet_loss(x[0], x[1], x[2], distance=distance)
    assert float(loss) == pytest.approx(0.2)
    assert np.all(np.isfinite(tape.gradient(loss, x).numpy()))


@pytest.mark.parametrize("name", ["batch_all", "batch_hard", "semi_hard", "contrastive"])
def test_gradient_matches_finite_differences(name):
    labels = [0, 0, 0, 1, 1, 2]
    x0 = np.random.default_rng(2).normal(size=(6, 3)).astype("float32")
    fn = FUNCTIONS[name][0]
    x = tf.Variable(x0)
    with tf.GradientTape() as tape:
        loss = fn(labels, x, 1.0)
    grad = tape.gradient(loss, x).numpy()
    numeric, eps = np.zeros_like(x0), 1e-3
    for index in np.ndindex(*x0.shape):
        step = np.zeros_like(x0)
        step[index] = eps
        numeric[index] = float(fn(labels, x0 + step, 1.0)) - float(fn(labels, x0 - step, 1.0))
        numeric[index] /= 2 * eps
    np.testing.assert_allclose(grad, numeric, atol=2e-2)


# ---------------------------------------------------------------- dtypes and label forms


@pytest.mark.parametrize("fn", ALL_FUNCTIONS, ids=list(FUNCTIONS))
def test_half_precision(fn):
    labels = LABEL_SETS["balanced_3x4"]
    x = np.random.default_rng(4).normal(size=(12, 4)).astype("float32")
    full = float(fn(labels, x, 0.5))
    assert float(fn(labels, x.astype("float16"), 0.5)) == pytest.approx(full, abs=1e-2)
    for dtype in ("float16", "bfloat16"):
        half = tf.cast(x, dtype)
        got = fn(labels, half, 0.5)
        # Computed in float32 from the rounded inputs, not in half precision.
        assert got.dtype == "float32"
        assert float(got) == pytest.approx(float(fn(labels, tf.cast(half, "float32"), 0.5)))


@pytest.mark.parametrize("fn", ALL_FUNCTIONS, ids=list(FUNCTIONS))
def test_label_forms(fn):
    labels = np.array([0, 0, 1, 1, 2, 2, 1])
    x = np.random.default_rng(5).normal(size=(7, 3)).astype("float32")
    expected = float(fn(labels, x))
    for form in (labels[:, None], labels.astype(str), tf.constant(labels.astype(str))):
        assert float(fn(form, x)) == pytest.approx(expected, rel=1e-6)


def test_traced_with_unknown_batch_size():
    spec = [tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, None], tf.float32)]
    labels = np.array(LABEL_SETS["singletons"], dtype="int32")
    x = np.random.default_rng(6).normal(size=(12, 5)).astype("float32")
    for name in TRIPLET_LOSSES + ["contrastive"]:
        fn = FUNCTIONS[name][0]
        traced = tf.function(lambda y, e, fn=fn: fn(y, e, 1.0), input_signature=spec)
        assert float(traced(labels, x)) == pytest.approx(float(fn(labels, x, 1.0)), rel=1e-5)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", ALL_FUNCTIONS, ids=list(FUNCTIONS))
def test_errors(fn):
    x = np.zeros((4, 2), dtype="float32")
    with pytest.raises(ValueError, match=r"margin must be a finite number >= 0, got -0.5"):
        fn([0, 0, 1, 1], x, -0.5)
    with pytest.raises(
        ValueError,
        match=r"distance must be one of \['cosine', 'euclidean', 'squared'\], "
        r"got 'l1'",
    ):
        fn([0, 0, 1, 1], x, 0.2, "l1")
    with pytest.raises(ValueError, match=r"expected 4 labels \(embeddings of shape \(4, 2\)\)"):
        fn([0, 0, 1], x)
    with pytest.raises(ValueError, match=r"embeddings must be a 2-D tensor"):
        fn([0, 0, 1, 1], np.zeros((4, 2, 1)))


# ---------------------------------------------------------------- numerics at the edges

IN_BATCH_FNS = {k: v[0] for k, v in FUNCTIONS.items()}


@pytest.mark.parametrize("distance", ["euclidean", "squared"])
@pytest.mark.parametrize("name", ["batch_all", "batch_hard", "semi_hard", "contrastive"])
def test_scale_homogeneous_at_large_magnitudes(name, distance):
    # Euclidean losses are homogeneous: L(s x, s m) = s L(x, m) (degree 2 for squared,
    # degree 2 again for contrastive's squares). At s = 1e12 the old expansion
    # ||x||^2 - 2 x.y + ||y||^2 lost every digit; the scaled one keeps them.
    labels = LABEL_SETS["balanced_3x4"]
    x = np.random.default_rng(13).normal(size=(12, 4)).astype("float32")
    s = 1e6 if distance == "squared" else 1e12
    power = (2 if distance == "squared" else 1) * (2 if name == "contrastive" else 1)
    margin_scale = s ** (2 if distance == "squared" else 1)
    fn = IN_BATCH_FNS[name]
    small = float(fn(labels, x, 1.0, distance))
    large = float(fn(labels, x * s, margin_scale, distance))
    assert small > 0
    np.testing.assert_allclose(large, small * s**power, rtol=1e-4)


@pytest.mark.parametrize("scale", [1e19, 1e30, 1e-30])
@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_finite_at_extreme_scales(name, distance, scale):
    x = tf.Variable(np.random.default_rng(14).normal(size=(8, 3)).astype("float32") * scale)
    with tf.GradientTape() as tape:
        loss = FUNCTIONS[name][0]([0, 0, 1, 1, 2, 2, 0, 1], x, 0.2, distance)
    grad = tape.gradient(loss, x)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(grad.numpy()))


def test_distances_saturate_instead_of_overflowing():
    # Squared distances of rows of 1e30 would be ~1e60 (inf in float32): the batch is
    # scaled down so that no distance exceeds MAX_DISTANCE, the gradient keeps its sign.
    from embedder.distances import MAX_DISTANCE

    x = tf.Variable([[0.0], [1e30], [3e30], [-1e30]])
    with tf.GradientTape() as tape:
        loss = batch_all_triplet_loss([0, 0, 1, 1], x, 0.2, "squared")
    grad = tape.gradient(loss, x).numpy()
    assert 0 < float(loss) <= 2 * MAX_DISTANCE
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_embeddings_raise(bad):
    x = np.ones((4, 2), dtype="float32")
    x[1, 0] = bad
    with pytest.raises(tf.errors.InvalidArgumentError, match="embeddings contain NaN or infinity"):
        batch_hard_triplet_loss([0, 0, 1, 1], x)
    traced = tf.function(lambda y, e: contrastive_loss(y, e))
    with pytest.raises(tf.errors.InvalidArgumentError, match="embeddings contain NaN or infinity"):
        traced(tf.constant([0, 0, 1, 1]), tf.constant(x))


def test_soft_batch_hard_ignores_margin_and_is_stable():
    labels = [0, 0, 1, 1]
    x = np.array([[0.0], [1e6], [1.0], [2.0]], dtype="float32")
    # gaps: anchor 0: 1e6 - 1; anchor 1: 1e6 - (1e6 - 2); anchor 2: 1 - 1; anchor 3: 2 - 2
    expected = (np.logaddexp(0, 1e6 - 1) + np.logaddexp(0, 2.0) + 2 * np.log(2)) / 4
    for margin in (0.0, 0.2, 50.0):
        got = float(batch_hard_triplet_loss(labels, x, margin, soft=True))
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert float(batch_hard_triplet_loss(labels, x, 50.0)) != pytest.approx(expected)


def test_cross_replica_outside_a_strategy_changes_nothing():
    labels = LABEL_SETS["random_5"]
    x = np.random.default_rng(15).normal(size=(20, 4)).astype("float32")
    for name, fn in IN_BATCH_FNS.items():
        assert float(fn(labels, x, 0.5, cross_replica=True)) == float(fn(labels, x, 0.5)), name
    with pytest.raises(TypeError, match=r"cross_replica must be True or False, got 1"):
        batch_all_triplet_loss(labels, x, cross_replica=1)


def test_class_and_factory_errors():
    names = (r"\['batch_all', 'batch_hard', 'semi_hard', 'contrastive', 'triplet', "
             r"'multi_similarity', 'supervised_contrastive', 'circle', 'proxy_anchor', "
             r"'arcface'\]")
    with pytest.raises(ValueError, match=rf"loss must be one of {names}, got 'hinge'"):
        get_loss("hinge")
    with pytest.raises(ValueError, match=rf"loss must be one of {names}, got 'hinge'"):
        default_margin("hinge")
    with pytest.raises(ValueError, match=r"margin must be a finite number >= 0, got -1"):
        BatchAllTripletLoss(margin=-1)
    with pytest.raises(ValueError, match=r"distance must be one of"):
        get_loss("semi_hard", distance="cos")
    with pytest.raises(TypeError, match=r"soft must be True or False, got 'yes'"):
        BatchHardTripletLoss(soft="yes")
    with pytest.raises(TypeError, match=r"cross_replica must be True or False, got 'no'"):
        ContrastiveLoss(cross_replica="no")
    with pytest.raises(ValueError, match="loss 'arcface' trains class proxies, which a Keras "
                       "Loss cannot hold: train it with TripletEmbedder or InBatchTrainer"):
        get_loss("arcface")
    with pytest.raises(
        ValueError,
        match=r"y_pred must have shape \(batch_size, 3, embedding_dim\) "
        r"holding stacked \(anchor, positive, negative\) embeddings, got shape \(4, 2\)",
    ):
        OfflineTripletLoss()(np.zeros(4), np.zeros((4, 2)))


# ---------------------------------------------------------------- Keras classes

CLASSES = [
    (BatchAllTripletLoss, batch_all_triplet_loss, {"margin": 0.3, "distance": "cosine"}),
    (BatchHardTripletLoss, batch_hard_triplet_loss, {"margin": 0.4, "soft": True}),
    (SemiHardTripletLoss, semi_hard_triplet_loss, {"distance": "squared"}),
    (ContrastiveLoss, contrastive_loss, {"margin": 0.7, "cross_replica": True}),
]


@pytest.mark.parametrize(("cls", "fn", "settings"), CLASSES)
def test_class_delegates_and_round_trips(cls, fn, settings):
    labels = np.array(LABEL_SETS["singletons"])
    x = np.random.default_rng(8).normal(size=(12, 4)).astype("float32")
    loss = cls(**settings)
    expected = float(fn(labels, x, **settings))
    assert float(loss(labels, x)) == pytest.approx(expected, rel=1e-6)
    assert float(loss(labels[:, None], x)) == pytest.approx(expected, rel=1e-6)
    config = loss.get_config()
    assert {k: config[k] for k in settings} == settings
    assert cls.from_config(config).get_config() == config
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is cls and restored.get_config() == config
    # Batch-level value repeated per sample: "sum" gives B times it, None the vector.
    summed = cls(**settings, reduction="sum")(labels, x)
    assert float(summed) == pytest.approx(12 * expected, rel=1e-5)
    assert tuple(cls(**settings, reduction=None)(labels, x).shape) == (12,)


def test_get_loss():
    assert isinstance(get_loss("triplet"), OfflineTripletLoss)
    loss = get_loss("batch_hard", distance="cosine", soft=True, name="bh")
    expected = dict(name="bh", reduction="sum_over_batch_size", dtype="float32")
    assert loss.get_config() == {
        **expected, "margin": 0.2, "distance": "cosine", "soft": True, "cross_replica": False
    }
    assert "cross_replica" not in get_loss("triplet").get_config()
    assert get_loss("contrastive").margin == 0.5
    assert get_loss("semi_hard", margin=0.0).margin == 0.0
    named = {name: type(get_loss(name)).__name__ for name, spec in LOSSES.items()
             if not spec.has_proxies}  # proxy losses need a trainer (see test_proxies)
    assert named == {
        "batch_all": "BatchAllTripletLoss", "batch_hard": "BatchHardTripletLoss",
        "semi_hard": "SemiHardTripletLoss", "contrastive": "ContrastiveLoss",
        "triplet": "OfflineTripletLoss", "multi_similarity": "MetricLoss",
        "supervised_contrastive": "MetricLoss", "circle": "MetricLoss"}


def _model(input_shape):
    return keras.Sequential(
        [keras.Input(input_shape), keras.layers.Dense(3), keras.layers.UnitNormalization()]
    )


@pytest.mark.parametrize("name", KERAS_LOSSES)
def test_compiled_model_saved_and_loaded(tmp_path, name):
    rng = np.random.default_rng(9)
    offline = name == "triplet"
    x = rng.normal(size=(8, 3, 4) if offline else (8, 4)).astype("float32")
    y = np.array([0, 0, 1, 1, 2, 2, 0, 1], dtype="float32")
    model = _model(x.shape[1:])
    loss = get_loss(name, margin=0.35, distance="cosine")
    model.compile(optimizer="sgd", loss=loss)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(loaded.loss) is type(loss)
    assert loaded.loss.get_config() == loss.get_config()
    embeddings = loaded.predict(x, verbose=0)
    expected = float(loss(y, embeddings))
    assert loaded.evaluate(x, y, batch_size=8, verbose=0) == pytest.approx(expected, rel=1e-5)
    if offline:
        a, p, n = embeddings[:, 0], embeddings[:, 1], embeddings[:, 2]
        assert expected == pytest.approx(float(triplet_loss(a, p, n, 0.35, "cosine")))


@pytest.mark.parametrize("name", KERAS_LOSSES)
def test_trains_with_fit_on_float16_embeddings(name):
    # Two batches per epoch. Keras compiles with XLA by default on GPU machines (batch size
    # unknown when traced): checked for the losses that loop over chunks or binary-search.
    rng = np.random.default_rng(12)
    y = np.repeat([0, 1, 2, 3], 4)
    shape = (3, 6) if name == "triplet" else (6,)
    x = rng.normal(size=(16, *shape)).astype("float32")
    model = keras.Sequential([keras.Input(shape), keras.layers.Dense(3, dtype="mixed_float16")])
    jit_compile = name in ("batch_all", "semi_hard")
    model.compile(optimizer="sgd", loss=get_loss(name), jit_compile=jit_compile)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert model.outputs[0].dtype == "float16"
    assert len(history["loss"]) == 2 and np.all(np.isfinite(history["loss"]))
