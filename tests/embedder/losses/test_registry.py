"""The one loss registry: adding a loss is its function, its entry and its test."""

import numpy as np
import pytest
from keras import ops

from embedder.losses import (
    LOSSES,
    BatchHardTripletLoss,
    LossSpec,
    LossTerms,
    MetricLoss,
    default_margin,
    get_loss,
    get_spec,
    in_batch_loss,
    loss_names,
    reduce_terms,
    register_loss,
    unregister_loss,
)
from embedder.losses.mining import batch_view
from embedder.training import TrainingConfig
from tests._helpers import TINY_SHAPE, tiny_embedder
from tests._images import make_shapes

NEW = ["multi_similarity", "supervised_contrastive", "circle", "proxy_anchor", "arcface"]


def test_builtin_entries():
    assert list(LOSSES) == ["batch_all", "batch_hard", "semi_hard", "contrastive", "triplet",
                            *NEW]
    assert loss_names(in_batch=True) == ("batch_all", "batch_hard", "semi_hard",
                                         "contrastive", *NEW)
    assert loss_names(in_batch=False) == ("triplet",)
    assert [default_margin(n) for n in LOSSES] == [0.2, 0.2, 0.2, 0.5, 0.2, None, None, 0.4,
                                                   0.1, 0.5]
    assert dict(get_spec("batch_hard").params) == {"soft": False}
    assert dict(get_spec("multi_similarity").params) == {"alpha": 2.0, "beta": 50.0,
                                                         "base": 0.5, "epsilon": 0.1}
    assert [n for n, spec in LOSSES.items() if spec.has_proxies] == ["proxy_anchor", "arcface"]
    assert all(spec.description for spec in LOSSES.values())


def test_registry_errors():
    with pytest.raises(ValueError, match=r"loss must be one of \['batch_all', 'batch_hard', "
                       r"'semi_hard', 'contrastive', 'triplet', 'multi_similarity', "
                       r"'supervised_contrastive', 'circle', 'proxy_anchor', 'arcface'\], "
                       "got 'hinge'"):
        get_spec("hinge")
    with pytest.raises(ValueError, match="a loss named 'batch_all' is already registered"):
        register_loss(LossSpec("batch_all", lambda *a: 0, "x", terms=lambda *a: 0))
    with pytest.raises(ValueError, match="a loss name must be an identifier, got 'a b'"):
        register_loss(LossSpec("a b", lambda *a: 0, "x"))
    with pytest.raises(TypeError, match="spec must be a LossSpec, got dict"):
        register_loss({"name": "x"})
    with pytest.raises(ValueError, match=r"loss 'batch_hard' takes the settings \['soft'\], "
                       "got unknown 'alpha'"):
        MetricLoss("batch_hard", alpha=1.0)
    with pytest.raises(TypeError, match="power of loss 'toy' must be a number, got 'x'"):
        register_loss(LossSpec("toy", _toy_function, "t", 0.1, _toy_terms, {"power": 2.0}))
        try:
            get_loss("toy", power="x")
        finally:
            unregister_loss("toy")
    with pytest.raises(ValueError, match="loss 'triplet' does not mine inside a batch"):
        in_batch_loss("triplet", None, 0.2)


def test_registered_classes_match_the_generic_wrapper():
    labels = np.array([0, 0, 1, 1, 2, 2])
    x = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    for name in loss_names(in_batch=True):
        if LOSSES[name].has_proxies:
            continue
        named, generic = get_loss(name), MetricLoss(name)
        assert float(named(labels, x)) == pytest.approx(float(generic(labels, x)), rel=1e-6)
    soft = BatchHardTripletLoss(soft=True)
    assert soft.soft is True and soft.get_config()["soft"] is True
    assert "loss" not in soft.get_config() and MetricLoss("semi_hard").get_config()["loss"] \
        == "semi_hard"


def _toy_function(labels, embeddings, margin=0.1, distance="euclidean", *,
                  cross_replica=False, power=2.0):
    """Toy loss: mean over positive pairs of d^power (no negatives)."""
    view = batch_view(labels, embeddings, distance, cross_replica)
    terms = _toy_terms(view, margin, power=power)
    return reduce_terms(terms.total, terms.count, view.context)


def _toy_terms(view, margin, power=2.0):
    mask = ops.cast(view.positives, "float32")
    return LossTerms(ops.sum(mask * ops.power(view.distances, power)), ops.sum(mask))


@pytest.fixture
def toy_loss():
    spec = register_loss(LossSpec("toy_pull", _toy_function, "pull positives together (test)",
                                  0.1, _toy_terms, {"power": 2.0}))
    yield spec
    unregister_loss("toy_pull")
    assert "toy_pull" not in LOSSES


def test_a_registered_loss_trains_through_the_estimator_and_the_cli(toy_loss):
    labels = np.array([0, 0, 1, 1])
    x = np.array([[0, 0], [3, 4], [1, 0], [1, 0]], "float32")
    # 2 positive pairs per class both ways: (25 + 25 + 0 + 0) / 4
    assert float(get_loss("toy_pull")(labels, x)) == pytest.approx(12.5)
    assert TrainingConfig(loss="toy_pull").validate().resolve(n_classes=4).margin == 0.1

    X, y = make_shapes(n_per_class=6, size=TINY_SHAPE[0], n_classes=3)
    embedder = tiny_embedder(loss="toy_pull", epochs=1, validation_fraction=0.0,
                             samples_per_class=2).fit(X, y)
    assert embedder.config_.loss == "toy_pull"
    assert np.isfinite(embedder.history_["loss"]).all()

    from pipelines.cli.main import _parser

    args = _parser().parse_args(["train", "data", "--loss", "toy_pull", "--out", "e.keras"])
    assert args.loss == "toy_pull"
