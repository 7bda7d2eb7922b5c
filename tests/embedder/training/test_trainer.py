"""InBatchTrainer with proxy losses: proxies are weights of the trainer, not the encoder."""

import keras
import numpy as np
import pytest

from embedder.training.trainer import InBatchTrainer
from tests import _references as ref

RNG = np.random.default_rng(3)
X = RNG.normal(size=(24, 6)).astype("float32")
Y = RNG.permutation(np.repeat(np.arange(6), 4)).astype("int32")  # shuffled, not P x K


def encoder():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])


@pytest.mark.parametrize(("loss", "params", "reference"), [
    ("proxy_anchor", {"alpha": 8.0}, ref.proxy_anchor),
    ("arcface", {"scale": 8.0, "sub_centers": 2}, ref.arcface)])  # fmt: skip
def test_logged_loss_is_the_reference_with_the_trainer_proxies(loss, params, reference):
    trainer = InBatchTrainer(encoder(), loss, n_classes=6, loss_params=params)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    got = trainer.train_on_batch(X[:10], Y[:10], return_dict=True)["loss"]
    embeddings = trainer.encoder.predict(X[:10], verbose=0).astype(np.float64)
    proxies = trainer.proxies.numpy().astype(np.float64)
    rows = 6 * params.get("sub_centers", 1)
    assert proxies.shape == (rows, 4)
    expected = reference(Y[:10], embeddings, proxies, trainer.margin, *params.values())
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("loss", ["proxy_anchor", "arcface"])
def test_proxies_train_from_shuffled_batches_and_stay_out_of_the_encoder(loss):
    trainer = InBatchTrainer(encoder(), loss, n_classes=6)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = trainer.proxies.numpy().copy()
    history = trainer.fit(X, Y, batch_size=5, epochs=3, shuffle=True, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["loss"][-1] < history["loss"][0]
    assert np.abs(trainer.proxies.numpy() - before).max() > 1e-3
    assert trainer.proxies.trainable
    assert all(w is not trainer.proxies for w in trainer.encoder.weights)
    assert len(trainer.encoder.weights) == 2  # kernel and bias only


def test_config_and_keras_file_round_trip(tmp_path):
    trainer = InBatchTrainer(encoder(), "arcface", margin=0.3, n_classes=6,
                             loss_params={"sub_centers": 3})
    trainer.compile(optimizer="adam")
    trainer.fit(X, Y, batch_size=8, epochs=1, verbose=0)
    config = trainer.get_config()
    assert config["n_classes"] == 6 and config["loss_params"] == {"scale": 64.0,
                                                                   "sub_centers": 3}
    assert InBatchTrainer.from_config(config).get_config() == config
    trainer.save(tmp_path / "trainer.keras")
    loaded = keras.saving.load_model(tmp_path / "trainer.keras")
    np.testing.assert_array_equal(loaded.proxies.numpy(), trainer.proxies.numpy())
    drop = lambda c: {k: v for k, v in c.items() if k != "encoder"}  # noqa: E731
    assert drop(loaded.get_config()) == drop(config)


def test_proxy_loss_needs_the_class_count():
    with pytest.raises(ValueError, match="n_classes must be an int >= 1 for the proxy loss "
                       "'proxy_anchor', got None"):
        InBatchTrainer(encoder(), "proxy_anchor")


@pytest.mark.parametrize("loss", ["proxy_anchor", "arcface"])
def test_estimator_trains_a_proxy_loss_and_embeds_new_classes(loss):
    from tests._helpers import TINY_SHAPE, tiny_embedder
    from tests._images import make_shapes

    X_img, y = make_shapes(n_per_class=6, size=TINY_SHAPE[0], n_classes=4)
    fitted = tiny_embedder(loss=loss, epochs=2, validation_fraction=0.0,
                           samples_per_class=2).fit(X_img[y < 3], y[y < 3])
    assert np.isfinite(fitted.history_["loss"]).all()
    names = [w.name for w in fitted.encoder_.weights]
    assert "proxies" not in names
    assert fitted.transform(X_img[y == 3]).shape == ((y == 3).sum(), 8)  # an unseen class
