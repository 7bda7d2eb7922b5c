import numpy as np
import pytest

from embedder.training.callbacks import (
    COLLAPSE_ADVICE,
    CollapseDetector,
    ConvergenceStop,
    PlateauStop,
    _mean_pairwise_distance,
)


class _Model:
    stop_training = False


def _run(detector, epochs_logs):
    detector.set_model(_Model())
    out = []
    for epoch, logs in enumerate(epochs_logs):
        logs = dict(logs)
        detector.on_epoch_end(epoch, logs)
        out.append(logs["collapsed"])
    return out


HEALTHY = {"loss": 0.12, "pos_distance": 0.6, "neg_distance": 1.2, "val_spread": 1.1}
PINNED = {"loss": 0.2, "pos_distance": 0.31, "neg_distance": 0.312}
SHRUNK = {"loss": 0.19, "pos_distance": 0.01, "neg_distance": 0.02}


def test_healthy_training_is_not_flagged(recwarn):
    flags = _run(CollapseDetector(margin=0.2), [HEALTHY] * 4)
    assert flags == [0.0, 0.0, 0.0, 0.0]
    assert not [w for w in recwarn if "collapsed" in str(w.message)]


def test_pinned_loss_and_shrunk_distances_are_flagged():
    detector = CollapseDetector(margin=0.2, patience=3)
    with pytest.warns(UserWarning, match="epoch 2: Triplet training collapsed"):
        flags = _run(detector, [HEALTHY, PINNED, SHRUNK])
    assert flags == [0.0, 1.0, 1.0]
    assert detector.collapsed_epochs == [1, 2]
    assert not detector.model.stop_training  # patience not reached yet


def test_patience_stops_training_and_warns_once(recwarn):
    detector = CollapseDetector(margin=0.2, patience=2)
    _run(detector, [SHRUNK, SHRUNK, SHRUNK])
    assert detector.model.stop_training
    assert sum(COLLAPSE_ADVICE in str(w.message) for w in recwarn) == 1


def test_validation_spread_stands_in_without_batch_distances():
    detector = CollapseDetector(margin=0.2)
    # the offline triplet path logs no batch distances: the held-out spread decides
    assert detector.is_collapsed({"loss": 0.2, "val_spread": 0.01})
    assert not detector.is_collapsed({"loss": 0.2, "val_spread": 0.9})
    # batch distances, when logged, are the direct signal
    assert not detector.is_collapsed({**HEALTHY, "val_spread": 0.01})
    assert detector.is_collapsed({**SHRUNK, "val_spread": 0.9})


def test_mean_pairwise_distance_literal():
    e = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # pairs: sqrt2, 2, sqrt2 -> mean (2 * 1.41421356 + 2) / 3
    assert _mean_pairwise_distance(e) == pytest.approx((2 * np.sqrt(2) + 2) / 3)
    assert _mean_pairwise_distance(np.ones((5, 3))) == pytest.approx(0.0, abs=1e-6)
    assert _mean_pairwise_distance(np.ones((1, 3))) == 0.0


def test_detector_starts_afresh_in_every_fit(recwarn):
    detector = CollapseDetector(margin=0.2, patience=3)
    _run(detector, [SHRUNK, SHRUNK])
    assert detector.collapsed_epochs == [0, 1] and len(recwarn) == 1
    detector.on_train_begin()  # a second fit with the same callback object
    model = _Model()
    detector.set_model(model)
    detector.on_epoch_end(0, dict(SHRUNK))
    # the streak restarted (no stop after 3 in all) and the advice is given again
    assert detector.collapsed_epochs == [0] and not model.stop_training
    assert len(recwarn) == 2


def test_history_recorder_keeps_the_whole_run_across_a_resume(tmp_path):
    from embedder.training.callbacks import HistoryRecorder

    first = HistoryRecorder(tmp_path)
    first.on_train_begin()
    for epoch, loss in enumerate([0.5, 0.4, 0.3]):
        first.on_epoch_end(epoch, {"loss": loss})
    resumed = HistoryRecorder(tmp_path)  # a new process resumes after epoch 2 (index 1)
    resumed.on_train_begin()
    resumed.on_epoch_end(2, {"loss": 0.25, "val_map_at_r": 0.9})
    resumed.on_epoch_end(3, {"loss": 0.2, "val_map_at_r": 0.95})
    assert resumed.history["loss"] == [0.5, 0.4, 0.25, 0.2]
    assert np.isnan(resumed.history["val_map_at_r"][:2]).all()
    assert resumed.history["val_map_at_r"][2:] == [0.9, 0.95]
    in_memory = HistoryRecorder()
    in_memory.on_train_begin()
    in_memory.on_epoch_end(0, {"loss": 1.0})
    assert in_memory.history == {"loss": [1.0]} and not list(tmp_path.glob("*.tmp"))


class _WeightsModel(_Model):
    """Weights are the epoch number, so a restore shows which epoch was kept."""

    def __init__(self):
        self.weights = [np.array(-1.0)]

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [np.asarray(w) for w in weights]


def _feed(callback, key, values, model=None):
    """Run ``values`` of ``key`` through ``callback``; the epoch it stopped after."""
    model = model or _WeightsModel()
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, value in enumerate(values):
        model.weights = [np.array(float(epoch))]
        callback.on_epoch_end(epoch, {key: value})
        if model.stop_training:
            return epoch
    return None


def test_plateau_stop_ignores_rises_below_min_delta_and_keeps_the_best_epoch():
    stop = PlateauStop("val_map_at_r", patience=3, min_delta=0.005)
    model = _WeightsModel()
    # 0.603 and 0.604 are better than 0.6 but by less than min_delta: no progress
    assert _feed(stop, "val_map_at_r", [0.5, 0.6, 0.603, 0.604, 0.602, 0.9], model) == 4
    assert stop.best_epoch == 3 and stop.stopped_epoch == 4
    assert stop.stop_reason == ("plateau: val_map_at_r did not rise by 0.005 or more for 3 "
                                "epochs (best 0.6040 at epoch 4)")
    stop.on_train_end()
    assert float(model.weights[0]) == 3.0  # the best epoch's weights, not the reference's


def test_plateau_stop_keeps_going_while_the_score_rises():
    stop = PlateauStop("val_map_at_r", patience=2, min_delta=0.01)
    assert _feed(stop, "val_map_at_r", [0.5, 0.52, 0.54, 0.56, 0.58]) is None
    assert stop.stop_reason is None and stop.best_epoch == 4
    stop.on_train_begin()  # a new fit starts afresh
    assert stop.best_epoch is None and stop.wait == 0


def test_convergence_stop_needs_a_streak_of_inactive_epochs():
    stop = ConvergenceStop(patience=2)
    assert _feed(stop, "active_fraction", [0.1, 0.0, 0.2, 0.0005, 0.0, 0.3]) == 4
    assert stop.stop_reason == ("converged: active_fraction <= 0.001 for 2 epochs "
                                "(nothing left to learn)")
    never = ConvergenceStop(patience=0)
    assert _feed(never, "active_fraction", [0.0] * 5) is None


def test_convergence_stop_reads_the_loss_without_an_active_fraction():
    stop = ConvergenceStop(patience=1)
    assert _feed(stop, "loss", [0.3, 0.0]) == 1
    assert stop.stop_reason.startswith("converged: loss <= 0.001 for 1 epochs")
