"""The fine-tuning recipe: head on a frozen backbone first, then everything at a lower rate."""

import keras
import numpy as np
import pytest

from embedder.models.encoders import build_encoder
from embedder.training.checkpoints import MANIFEST
from embedder.training.config import TrainingConfig
from embedder.training.fine_tuning import (
    FINE_TUNE,
    FROZEN,
    Phase,
    plan_phases,
    restore_trainable,
    set_phase_layers,
    trainable_flags,
)
from embedder.training.run import (
    build_training_run,
    learning_rate_schedule,
    run_training,
    train_encoder,
)
from tests._helpers import tiny_embedder

SHAPE = (16, 16, 3)


def _pretrained(name, tmp_path, seed=0):
    """An encoder of ``name`` built from a weights file, as a pretrained start is."""
    keras.utils.set_random_seed(seed)
    path = tmp_path / f"{name}.weights.h5"
    build_encoder(name, SHAPE, 8).save_weights(path)
    keras.utils.set_random_seed(seed + 1)  # the loaded weights, not this seed, count
    return build_encoder(name, SHAPE, 8, weights=path), path


class _Recorder(keras.callbacks.Callback):
    """Weights of every layer after each epoch, and the train begin/end calls seen."""

    def __init__(self, encoder, stop_at=None, interrupt_at=None):
        super().__init__()
        self.encoder, self.stop_at, self.interrupt_at = encoder, stop_at, interrupt_at
        self.weights, self.epochs, self.begins, self.ends = [], [], 0, 0

    def on_train_begin(self, logs=None):
        self.begins += 1

    def on_train_end(self, logs=None):
        self.ends += 1

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)
        self.weights.append({layer.name: [w.numpy().copy() for w in layer.weights]
                             for layer in self.encoder.layers if layer.weights})
        if epoch == self.stop_at:
            self.model.stop_training = True
        if epoch == self.interrupt_at:
            raise KeyboardInterrupt("simulated interruption")


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _config(**settings):
    return TrainingConfig(**{"validation_fraction": 0, "random_state": 0, **settings})


@pytest.mark.parametrize(("settings", "pretrained", "frozen", "factor"), [
    ({}, False, 0, 1.0),                     # from scratch nothing is frozen or lowered
    ({}, True, 1, 0.1),                      # pretrained: one head-only epoch
    ({"epochs": 1}, True, 0, 1.0),           # one epoch: it trains everything
    ({"freeze_backbone_epochs": 3, "epochs": 3}, False, 3, 1.0),  # head only throughout
    ({"freeze_backbone_epochs": 2, "fine_tune_learning_rate_factor": 0.5}, False, 2, 0.5),
    ({"freeze_backbone_epochs": 0}, True, 0, 1.0),
])
def test_resolve_decides_the_frozen_epochs(settings, pretrained, frozen, factor):
    config = TrainingConfig(**settings).validate().resolve(5, pretrained=pretrained)
    assert config.freeze_backbone_epochs == frozen
    assert config.fine_tune_learning_rate_factor == factor
    assert config.resolve(5) == config  # resolving twice changes nothing


def test_plan_phases():
    assert plan_phases(_config(epochs=4).resolve(5)) == [Phase(0, 4)]
    assert plan_phases(_config(epochs=4).resolve(5, pretrained=True)) == [
        Phase(0, 1, FROZEN), Phase(1, 4, FINE_TUNE, 0.1)]
    assert plan_phases(_config(epochs=2, freeze_backbone_epochs=2).resolve(5)) == [
        Phase(0, 2, FROZEN)]


@pytest.mark.parametrize(("settings", "message"), [
    ({"freeze_backbone_epochs": -1},
     "freeze_backbone_epochs must be an int >= 0 or None, got -1"),
    ({"freeze_backbone_epochs": 1.5},
     "freeze_backbone_epochs must be an int >= 0 or None, got 1.5"),
    ({"freeze_backbone_epochs": 3, "epochs": 2},
     "freeze_backbone_epochs must be at most epochs (2), got 3"),
    ({"fine_tune_learning_rate_factor": 0},
     "fine_tune_learning_rate_factor must be a number in (0, 1], got 0"),
    ({"fine_tune_learning_rate_factor": 1.5},
     "fine_tune_learning_rate_factor must be a number in (0, 1], got 1.5"),
    ({"fine_tune_learning_rate_factor": True},
     "fine_tune_learning_rate_factor must be a number in (0, 1], got True"),
])
def test_validate_messages(settings, message):
    with pytest.raises(ValueError) as info:
        TrainingConfig(**settings).validate()
    assert str(info.value) == message


def test_frozen_phase_trains_only_the_head_then_all_but_batchnorm(shapes16, tmp_path):
    X, y = shapes16
    encoder, _ = _pretrained("small_cnn", tmp_path)
    start = {layer.name: [w.numpy().copy() for w in layer.weights]
             for layer in encoder.layers if layer.weights}
    recorder = _Recorder(encoder)
    run = build_training_run(encoder, X, y, _config(epochs=3), input_shape=SHAPE,
                             callbacks=[recorder], pretrained=True)
    assert run.config.freeze_backbone_epochs == 1
    history = run_training(run)

    after_frozen, after_all = recorder.weights[0], recorder.weights[-1]
    for name, weights in start.items():
        if name == "embedding":
            assert not _same(after_frozen[name], weights)  # the head trained
        else:  # kernels, BatchNorm scale/offset and moving statistics untouched
            assert _same(after_frozen[name], weights), name
    for name in ("block1_conv", "block4_conv"):
        assert not _same(after_all[name], after_frozen[name]), name
    for name in ("block1_bn", "block4_bn"):  # inference mode in both phases
        assert _same(after_all[name], start[name]), name
    # the run's callbacks see one training across the two fits
    assert (recorder.begins, recorder.ends, recorder.epochs) == (1, 1, [0, 1, 2])
    assert history["backbone_frozen"] == [1.0, 0.0, 0.0]
    steps, config = run.steps_per_epoch, run.config
    expected = [learning_rate_schedule(config, steps, 1)(steps),
                0.1 * learning_rate_schedule(config, steps, 2)(steps),
                0.1 * learning_rate_schedule(config, steps, 2)(2 * steps)]
    np.testing.assert_allclose(history["learning_rate"], [float(e) for e in expected],
                               rtol=1e-5)
    assert max(history["learning_rate"][1:]) <= 0.1 * config.learning_rate * 1.0001
    assert all(layer.trainable for layer in encoder.layers)  # flags given back


def test_from_scratch_nothing_is_frozen(shapes16):
    X, y = shapes16
    keras.utils.set_random_seed(0)
    encoder = build_encoder("small_cnn", SHAPE, 8)
    bn = encoder.get_layer("block1_bn").moving_mean.numpy().copy()
    history = train_encoder(encoder, X, y, _config(epochs=2, learning_rate=1e-3),
                            input_shape=SHAPE)
    assert history["backbone_frozen"] == [0.0, 0.0]
    assert not np.array_equal(encoder.get_layer("block1_bn").moving_mean.numpy(), bn)
    # one schedule over both epochs: warm-up to the peak, then cosine decay to 1%
    np.testing.assert_allclose(history["learning_rate"], [1e-3, 1e-5], rtol=1e-5)


def test_estimator_applies_the_recipe_to_a_pretrained_start(shapes16, tmp_path):
    X, y = shapes16
    _, weights = _pretrained("tiny_cnn", tmp_path)
    tuned = tiny_embedder(weights=str(weights), epochs=2, validation_fraction=0).fit(X, y)
    assert tuned.config_.freeze_backbone_epochs == 1
    assert tuned.config_.fine_tune_learning_rate_factor == 0.1
    assert tuned.history_["backbone_frozen"] == [1.0, 0.0]
    scratch = tiny_embedder(epochs=2, validation_fraction=0).fit(X, y)
    assert scratch.config_.freeze_backbone_epochs == 0
    assert scratch.config_.fine_tune_learning_rate_factor == 1.0  # nothing lowered
    assert scratch.history_["backbone_frozen"] == [0.0, 0.0]
    assert tiny_embedder(encoder="saved.keras")._pretrained_start()
    assert not tiny_embedder()._pretrained_start()
    with pytest.raises(ValueError, match=r"The 'fine_tune_learning_rate_factor' parameter"):
        tiny_embedder(fine_tune_learning_rate_factor=2.0).fit(X, y)


def test_early_stop_in_the_frozen_phase_ends_the_run(shapes16, tmp_path):
    X, y = shapes16
    encoder, _ = _pretrained("tiny_cnn", tmp_path)
    recorder = _Recorder(encoder, stop_at=0)
    folder = tmp_path / "ckpt"
    history = train_encoder(encoder, X, y, _config(epochs=3, checkpoint_dir=str(folder)),
                            input_shape=SHAPE, callbacks=[recorder], pretrained=True)
    assert recorder.epochs == [0] and history["backbone_frozen"] == [1.0]
    assert recorder.ends == 1
    assert not folder.exists()  # a finished run leaves no backup to "resume" later


@pytest.mark.parametrize("interrupt_at", [0, 2])  # in the frozen phase, in the second
def test_resume_neither_redoes_nor_skips_a_phase(shapes16, tmp_path, interrupt_at):
    X, y = shapes16
    settings = dict(epochs=4, freeze_backbone_epochs=2)
    reference = train_encoder(_pretrained("tiny_cnn", tmp_path)[0], X, y,
                              _config(**settings, checkpoint_dir=str(tmp_path / "ref")),
                              input_shape=SHAPE)
    folder = tmp_path / "ckpt"
    config = _config(**settings, checkpoint_dir=str(folder))
    encoder, _ = _pretrained("tiny_cnn", tmp_path)
    with pytest.raises(KeyboardInterrupt):
        train_encoder(encoder, X, y, config, input_shape=SHAPE,
                      callbacks=[_Recorder(encoder, interrupt_at=interrupt_at)])
    assert (folder / MANIFEST).is_file()

    fresh, _ = _pretrained("tiny_cnn", tmp_path, seed=5)  # as a new process would
    recorder = _Recorder(fresh)
    history = train_encoder(fresh, X, y, config, input_shape=SHAPE, callbacks=[recorder])
    assert recorder.epochs == list(range(interrupt_at + 1, 4))  # only the missing epochs
    assert history["backbone_frozen"] == [1.0, 1.0, 0.0, 0.0]
    # the schedule (and so the optimizer's step count) continues where it stopped
    np.testing.assert_allclose(history["learning_rate"], reference["learning_rate"],
                               rtol=1e-5)
    np.testing.assert_allclose(history["loss"][:interrupt_at + 1],
                               reference["loss"][:interrupt_at + 1], rtol=1e-5)
    # restored weights and optimizer, and the sampler at the resumed epoch: the remaining
    # epochs train on the uninterrupted run's batches
    np.testing.assert_allclose(history["loss"][interrupt_at + 1:],
                               reference["loss"][interrupt_at + 1:], rtol=1e-3)
    assert not folder.exists()


def test_an_encoder_without_the_named_head_is_refused(shapes16):
    X, y = shapes16
    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    x = keras.layers.UnitNormalization()(keras.layers.Dense(8, name="projection")(x))
    encoder = keras.Model(inputs, x, name="headless")
    with pytest.raises(ValueError) as info:
        train_encoder(encoder, X, y, _config(epochs=2, freeze_backbone_epochs=1),
                      input_shape=SHAPE)
    assert str(info.value) == (
        "freeze_backbone_epochs=1 needs an encoder whose embedding head is a top-level "
        "layer named 'embedding' (as embedder.models.encoders.embedding_head adds it), got "
        "encoder 'headless' without one; set freeze_backbone_epochs=0 to train all its "
        "layers")


def test_phase_layers_reach_into_nested_backbones():
    inner_in = keras.Input((8, 8, 3))
    z = keras.layers.Conv2D(4, 3, name="conv1")(inner_in)
    z = keras.layers.Conv2D(4, 3, name="conv2")(z)
    z = keras.layers.BatchNormalization(name="bn")(z)
    backbone = keras.Model(inner_in, keras.layers.GlobalAveragePooling2D()(z),
                           name="backbone")  # nested, as a Keras Applications model is
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Dense(4, name="embedding")(backbone(inputs))
    encoder = keras.Model(inputs, keras.layers.UnitNormalization(name="l2_normalize")(x))
    backbone.get_layer("conv1").trainable = False  # the user's own choice: kept
    flags = trainable_flags(encoder)
    head = {id(v) for v in encoder.get_layer("embedding").weights}
    conv2 = {id(v) for v in backbone.get_layer("conv2").weights}

    set_phase_layers(encoder, Phase(0, 1, FROZEN), flags)
    assert {id(v) for v in encoder.trainable_variables} == head
    assert not backbone.get_layer("bn").trainable
    set_phase_layers(encoder, Phase(1, 2, FINE_TUNE), flags)
    assert {id(v) for v in encoder.trainable_variables} == head | conv2
    assert not backbone.get_layer("bn").trainable
    restore_trainable(flags)
    assert trainable_flags(encoder) == flags
    assert backbone.get_layer("bn").trainable and backbone.get_layer("conv2").trainable


def test_early_stopping_keeps_the_best_epoch_across_phases():
    from embedder.training.fine_tuning import SpanningCallback, end_run

    class Score(keras.callbacks.Callback):  # a validation score that peaks in phase 1
        def on_epoch_end(self, epoch, logs=None):
            logs["val_map_at_r"] = [0.9, 0.5, 0.4][epoch]
            snapshots.append(self.model.get_weights())

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = np.random.default_rng(0).normal(size=(16, 3)), np.ones((16, 1))
    stopping = keras.callbacks.EarlyStopping(monitor="val_map_at_r", mode="max",
                                             patience=5, restore_best_weights=True)
    snapshots = []
    for first, (start, stop) in ((True, (0, 1)), (False, (1, 3))):
        model.fit(x, y, initial_epoch=start, epochs=stop, verbose=0,
                  callbacks=[Score(), SpanningCallback(stopping, first=first)])
    assert not _same(model.get_weights(), snapshots[0])
    end_run([stopping])
    assert _same(model.get_weights(), snapshots[0])  # the best of the run: epoch 1
