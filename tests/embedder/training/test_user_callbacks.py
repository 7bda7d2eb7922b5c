"""The user's Keras callbacks: through the estimator, a Pipeline, clone and pickle."""

import csv
import pickle

import keras
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

from embedder.training.user_callbacks import (
    RunLogger,
    check_callbacks,
    portable_callback,
)
from tests._helpers import tiny_embedder


class EpochRecorder(keras.callbacks.Callback):
    """Records every hook call and the logs of each epoch."""

    def on_train_begin(self, logs=None):
        self.calls = ["train_begin"]
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(f"epoch_end {epoch}")
        self.epochs.append((epoch, dict(logs)))

    def on_train_end(self, logs=None):
        self.calls.append("train_end")


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def _csv_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_callbacks_see_every_epoch_of_both_phases_with_the_metrics(shapes16, tmp_path):
    X, y = shapes16
    recorder = EpochRecorder()
    log = tmp_path / "log.csv"
    embedder = tiny_embedder(freeze_backbone_epochs=1, epochs=3, callbacks=[recorder])
    embedder.fit(X, y, callbacks=[keras.callbacks.CSVLogger(str(log))])
    assert recorder.calls == ["train_begin", "epoch_end 0", "epoch_end 1", "epoch_end 2",
                              "train_end"]
    assert embedder.history_["backbone_frozen"] == [1, 0, 0]
    for (_, logs), frozen in zip(recorder.epochs, [1, 0, 0], strict=True):
        assert {"loss", "active_fraction", "val_map_at_r", "learning_rate"} <= set(logs)
        assert logs["backbone_frozen"] == frozen
    rows = _csv_rows(log)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    np.testing.assert_allclose([float(r["loss"]) for r in rows], embedder.history_["loss"],
                               rtol=1e-6)


def test_a_callback_stops_training(shapes16):
    X, y = shapes16
    embedder = tiny_embedder(epochs=3, callbacks=[StopAfterFirstEpoch()]).fit(X, y)
    assert len(embedder.history_["loss"]) == 1


def test_pipeline_routes_fit_callbacks(shapes16):
    X, y = shapes16
    recorder = EpochRecorder()
    pipe = Pipeline([("embed", tiny_embedder(epochs=2)),
                     ("head", KNeighborsClassifier(1))])
    pipe.fit(X, y, embed__callbacks=[recorder])
    assert [epoch for epoch, _ in recorder.epochs] == [0, 1]


def test_clone_and_pickle_after_training(shapes16, tmp_path):
    X, y = shapes16
    log = tmp_path / "log.csv"
    recorder = EpochRecorder()
    embedder = tiny_embedder(epochs=1, callbacks=[keras.callbacks.CSVLogger(str(log)),
                                                  recorder]).fit(X, y)
    copied = clone(embedder)
    logger, twin = copied.callbacks
    assert isinstance(logger, keras.callbacks.CSVLogger) and logger.filename == str(log)
    assert twin is not recorder and twin.model is None and logger.model is None
    assert twin.epochs == recorder.epochs  # plain state is kept, deep-copied
    restored = pickle.loads(pickle.dumps(embedder))
    assert restored.callbacks[0].filename == str(log)
    np.testing.assert_allclose(restored.transform(X[:4]), embedder.transform(X[:4]))
    copied.set_params(epochs=2).fit(X, y)  # the clone's copy logs on its own
    assert len(_csv_rows(log)) == 2 and recorder.epochs[-1][0] == 0


def test_a_used_tensorboard_clones_and_trains_again(shapes16, tmp_path):
    X, y = shapes16
    embedder = tiny_embedder(epochs=1, callbacks=[
        keras.callbacks.TensorBoard(str(tmp_path / "tb"))]).fit(X, y)
    copied = pickle.loads(pickle.dumps(clone(embedder)))
    assert copied.callbacks[0]._writers == {}
    copied.fit(X, y)
    assert len(list((tmp_path / "tb").rglob("events.out.tfevents.*"))) >= 2


def test_portable_callback_drops_what_does_not_pickle():
    callback = EpochRecorder()
    callback.handle = open(__file__)  # noqa: SIM115 - an open file, as CSVLogger holds
    callback.handle.close()
    callback.note = {"kept": [1, 2]}
    callback.writers = {"train": callback.handle}
    twin = portable_callback(callback)
    assert twin.handle is None and twin.note == {"kept": [1, 2]} and twin.writers == {}
    assert twin.note is not callback.note and callback.handle is not None


@pytest.mark.parametrize(("callbacks", "error"), [
    ("csv", "callbacks must be a list of keras.callbacks.Callback, got str"),
    ([EpochRecorder(), 3, "x"], "callbacks must hold keras.callbacks.Callback instances, "
                                "got int, str"),
])
def test_invalid_callbacks(callbacks, error):
    with pytest.raises(TypeError, match=f"^{error}$"):
        check_callbacks(callbacks)


def test_estimator_checks_fit_callbacks(shapes16):
    X, y = shapes16
    with pytest.raises(TypeError, match="^fit's callbacks must hold"):
        tiny_embedder(epochs=1).fit(X, y, callbacks=[print])


@pytest.mark.parametrize("kind", ["csv", "tensorboard"])
def test_run_logger_numbers_each_run(shapes16, tmp_path, kind):
    X, y = shapes16
    target = tmp_path / ("logs.csv" if kind == "csv" else "tb")
    embedder = tiny_embedder(epochs=2, callbacks=[RunLogger(kind, target)])
    embedder.fit(X, y)
    clone(embedder).fit(X, y)
    if kind == "csv":
        runs = sorted(p.name for p in tmp_path.iterdir())
        assert runs == ["logs-run-1.csv", "logs-run-2.csv"]
        assert [len(_csv_rows(tmp_path / r)) for r in runs] == [2, 2]
    else:
        assert sorted(p.name for p in target.iterdir()) == ["run-1", "run-2"]
        events = list((target / "run-2").rglob("events.out.tfevents.*"))
        assert events and all(e.stat().st_size > 0 for e in events)


def test_run_logger_kind():
    with pytest.raises(ValueError, match="^kind must be 'tensorboard' or 'csv', got 'txt'$"):
        RunLogger("txt", "x")
