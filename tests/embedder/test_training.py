import keras
import numpy as np
import pytest

from embedder.callbacks import COLLAPSE_ADVICE
from embedder.encoders import build_encoder
from embedder.metrics import retrieval_scores
from embedder.training import default_classes_per_batch, split_validation, train_encoder

SHAPE = (16, 16, 3)


def _encoder(name="tiny_cnn", dim=8, seed=0):
    keras.utils.set_random_seed(seed)
    return build_encoder(name, SHAPE, dim)


def test_default_classes_per_batch():
    assert default_classes_per_batch(5, 4) == 5  # all classes when fewer than 64 / K
    assert default_classes_per_batch(100, 4) == 16
    assert default_classes_per_batch(100, 32) == 2
    assert default_classes_per_batch(1000, 100) == 2


def test_split_validation_is_stratified_and_skips_tiny_sets():
    y = np.repeat(np.arange(5), 20)
    train, val = split_validation(y, 0.1, random_state=0)
    assert len(val) == 10 and len(train) == 90
    assert np.bincount(y[val]).tolist() == [2, 2, 2, 2, 2]
    assert not set(train) & set(val)
    assert split_validation(y, 0.0)[1] is None
    # 3 images in a class: a split would leave no positive pair on one side
    y_small = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    train, val = split_validation(y_small, 0.5)
    assert val is None and len(train) == 8


def test_in_batch_training_separates_shapes(shapes16):
    X, y = shapes16
    encoder = _encoder()
    before = retrieval_scores(encoder.predict(X, verbose=0), y)["precision_at_1"]
    history = train_encoder(
        encoder, X, y, input_shape=SHAPE, epochs=8, learning_rate=3e-3,
        validation_fraction=0.2, random_state=0,
    )
    for key in ("loss", "active_fraction", "pos_distance", "neg_distance", "norm_mean",
                "norm_std", "val_precision_at_1", "val_map_at_r", "collapsed"):
        assert key in history and len(history[key]) == len(history["loss"])
    assert np.allclose(history["norm_mean"], 1.0, atol=1e-4)
    assert max(history["val_precision_at_1"]) > 0.6  # chance is 0.2
    after = retrieval_scores(encoder.predict(X, verbose=0), y)["precision_at_1"]
    assert after > max(before, 0.7)
    assert history["neg_distance"][-1] > history["pos_distance"][-1]
    assert not any(history["collapsed"])


@pytest.mark.parametrize("loss", ["batch_hard", "semi_hard", "contrastive", "triplet"])
def test_every_loss_trains(shapes16, loss):
    X, y = shapes16
    history = train_encoder(
        _encoder(), X, y, input_shape=SHAPE, loss=loss, epochs=2, validation_fraction=0,
        random_state=0,
    )
    assert len(history["loss"]) == 2
    assert np.all(np.isfinite(history["loss"]))


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt("simulated interruption")


def test_resume_from_checkpoint(shapes16, tmp_path):
    X, y = shapes16
    kwargs = dict(input_shape=SHAPE, epochs=4, validation_fraction=0, random_state=0,
                  checkpoint_dir=tmp_path / "ckpt")
    encoder = _encoder()
    with pytest.raises(KeyboardInterrupt):
        train_encoder(encoder, X, y, callbacks=[_Interrupt(at_epoch=1)], **kwargs)
    assert any((tmp_path / "ckpt").iterdir())
    weights_at_interrupt = [w.copy() for w in encoder.get_weights()]

    fresh = _encoder(seed=1)  # a new process would rebuild the model from scratch
    history = train_encoder(fresh, X, y, **kwargs)
    # epochs 1-2 were done: only epochs 3 and 4 run, starting from the saved weights
    assert len(history["loss"]) == 2
    assert not all(
        np.array_equal(a, b) for a, b in zip(weights_at_interrupt, fresh.get_weights(),
                                             strict=True)
    )


def test_collapse_detector_fires_on_forced_collapse(shapes16):
    X, y = shapes16
    with pytest.warns(UserWarning, match="Triplet training collapsed") as record:
        history = train_encoder(
            _encoder("collapsed_cnn"), X, y, input_shape=SHAPE, epochs=6,
            learning_rate=1e-9, validation_fraction=0.2, random_state=0,
        )
    assert any(COLLAPSE_ADVICE in str(w.message) for w in record)
    # loss pinned at the margin, every distance ~0, stopped after 3 collapsed epochs
    assert history["collapsed"] == [1.0, 1.0, 1.0]
    assert history["loss"][-1] == pytest.approx(0.2, abs=1e-3)
    assert history["neg_distance"][-1] < 1e-3
