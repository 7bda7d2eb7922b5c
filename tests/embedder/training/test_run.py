import keras
import numpy as np
import pytest

from embedder.metrics import retrieval_scores
from embedder.models.encoders import build_encoder
from embedder.training.callbacks import COLLAPSE_ADVICE
from embedder.training.checkpoints import BACKUP_METADATA, HISTORY, MANIFEST, WEIGHTS
from embedder.training.config import TrainingConfig
from embedder.training.run import build_training_run, run_training, split_validation, train_encoder

SHAPE = (16, 16, 3)


def _encoder(name="tiny_cnn", dim=8, seed=0):
    keras.utils.set_random_seed(seed)
    return build_encoder(name, SHAPE, dim)


def _train(encoder, X, y, callbacks=(), **settings):
    config = TrainingConfig(**{"random_state": 0, **settings})
    return train_encoder(encoder, X, y, config, input_shape=SHAPE, callbacks=callbacks)


def test_split_validation_is_stratified_and_skips_tiny_sets():
    y = np.repeat(np.arange(5), 20)
    train, val, reason = split_validation(y, 0.1, random_state=0)
    assert len(val) == 10 and len(train) == 90 and reason is None
    assert np.bincount(y[val]).tolist() == [2, 2, 2, 2, 2]
    assert not set(train) & set(val)
    assert split_validation(y, 0.0)[1:] == (None, "validation_fraction=0")
    # 3 images in a class: a split would leave no positive pair on one side
    y_small = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    train, val, reason = split_validation(y_small, 0.5)
    assert val is None and len(train) == 8
    assert reason == "the smallest class has 3 images, a split needs at least 4 per class"
    # 40 classes x 10 images: 10% gives 40 validation images, 80 are needed
    train, val, reason = split_validation(np.repeat(np.arange(40), 10), 0.1)
    assert val is None and reason == (
        "validation_fraction=0.1 of 400 images gives 40 validation images, retrieval needs "
        "at least 80 (2 per class for 40 classes) on each side")


def test_build_training_run_resolves_the_config(shapes16):
    X, y = shapes16
    run = build_training_run(_encoder(), X, y, TrainingConfig(epochs=2, random_state=0),
                             input_shape=SHAPE)
    assert run.config.margin == 0.2 and run.config.classes_per_batch == 5
    # 108 training images, 21-22 a class: 6 chunks of K=4 each, 30 chunks in batches of 5
    assert run.config.samples_per_class == 4
    assert run.steps_per_epoch == 6
    assert run.validation == {"used": True, "reason": None, "n_images": 12}
    assert run.model.optimizer is not None and run.encoder is run.model.encoder
    history = run_training(run)
    assert len(history["loss"]) == 2


def test_in_batch_training_separates_shapes(shapes16):
    X, y = shapes16
    encoder = _encoder()
    before = retrieval_scores(encoder.predict(X, verbose=0), y)["precision_at_1"]
    history = _train(encoder, X, y, epochs=8, learning_rate=3e-3, validation_fraction=0.2,
                     converged_patience=0)
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
    history = _train(_encoder(), X, y, loss=loss, epochs=2, validation_fraction=0)
    assert len(history["loss"]) == 2
    assert np.all(np.isfinite(history["loss"]))


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt("simulated interruption")


def test_resume_from_checkpoint_continues_the_same_run(shapes16, tmp_path):
    X, y = shapes16
    settings = dict(epochs=4, validation_fraction=0, checkpoint_dir=str(tmp_path / "ckpt"))
    full = _train(_encoder(), X, y, **{**settings, "checkpoint_dir": str(tmp_path / "ref")})

    with pytest.raises(KeyboardInterrupt):
        _train(_encoder(), X, y, callbacks=[_Interrupt(at_epoch=1)], **settings)
    assert (tmp_path / "ckpt" / MANIFEST).is_file()
    assert (tmp_path / "ckpt" / HISTORY).is_file()

    fresh = _encoder(seed=1)  # a new process would rebuild the model from scratch
    history = _train(fresh, X, y, **settings)
    # the resumed run reports all 4 epochs: the 2 recorded before the interruption, then
    # epochs 3-4 continued from the saved weights and optimizer state, on the batches the
    # uninterrupted run drew for them (the sampler starts at the resumed epoch), so they
    # match it up to float reordering; a fresh start would begin near 0.187.
    assert len(history["loss"]) == 4
    np.testing.assert_allclose(history["loss"][:2], full["loss"][:2], rtol=1e-5)
    np.testing.assert_allclose(history["loss"][2:], full["loss"][2:], rtol=1e-3)
    assert history["loss"][2] < history["loss"][0] - 0.02


def test_checkpoint_of_another_run_is_refused(shapes16, tmp_path):
    X, y = shapes16
    folder = str(tmp_path / "ckpt")
    with pytest.raises(KeyboardInterrupt):
        _train(_encoder(), X, y, callbacks=[_Interrupt(at_epoch=0)], epochs=3,
               validation_fraction=0, checkpoint_dir=folder)
    with pytest.raises(ValueError, match=r"checkpoint_dir '.*ckpt' belongs to another "
                       r"training run: the training images or labels differ"):
        _train(_encoder(), X[:-10], y[:-10], epochs=3, validation_fraction=0,
               checkpoint_dir=folder)
    with pytest.raises(ValueError, match=r"the settings learning_rate \(0.002 -> 0.01\) "
                       "differ"):
        _train(_encoder(), X, y, epochs=3, validation_fraction=0, checkpoint_dir=folder,
               learning_rate=0.01)
    with pytest.raises(ValueError, match="the encoder architecture differ"):
        _train(_encoder(dim=4), X, y, epochs=3, validation_fraction=0,
               checkpoint_dir=folder)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "chkpt.weights.h5").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"holds files of an unknown run \(no run.json\)"):
        _train(_encoder(), X, y, epochs=1, validation_fraction=0, checkpoint_dir=str(stray))


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda folder: (folder / BACKUP_METADATA).write_text("{"),
     r"its training_metadata\.json is damaged \(not JSON: Expecting property name "
     r"enclosed in double quotes\)"),
    (lambda folder: (folder / WEIGHTS).write_bytes((folder / WEIGHTS).read_bytes()[:3000]),
     r"its latest\.weights\.h5 is damaged \(Unable to synchronously open file "
     r"\(truncated file: .*\)"),
])
def test_damaged_checkpoint_is_refused_naming_the_folder(shapes16, tmp_path, damage, problem):
    X, y = shapes16
    folder = tmp_path / "ckpt"
    settings = dict(epochs=2, validation_fraction=0, checkpoint_dir=str(folder))
    with pytest.raises(KeyboardInterrupt):
        _train(_encoder(), X, y, callbacks=[_Interrupt(at_epoch=0)], **settings)
    damage(folder)
    with pytest.raises(ValueError, match=rf"^checkpoint_dir '{folder}' cannot be resumed: "
                       rf"{problem}; delete the folder to train from the first epoch$"):
        _train(_encoder(), X, y, **settings)


def test_collapse_detector_fires_on_forced_collapse(shapes16):
    X, y = shapes16
    with pytest.warns(UserWarning, match="Triplet training collapsed") as record:
        history = _train(_encoder("collapsed_cnn"), X, y, epochs=6, learning_rate=1e-9,
                         validation_fraction=0.2)
    assert any(COLLAPSE_ADVICE in str(w.message) for w in record)
    # loss pinned at the margin, every distance ~0, stopped after 3 collapsed epochs
    assert history["collapsed"] == [1.0, 1.0, 1.0]
    assert history["loss"][-1] == pytest.approx(0.2, abs=1e-3)
    assert history["neg_distance"][-1] < 1e-3
