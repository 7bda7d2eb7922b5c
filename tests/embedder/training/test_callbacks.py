import numpy as np
import pytest

from embedder.training.callbacks import COLLAPSE_ADVICE, CollapseDetector, _mean_pairwise_distance


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
