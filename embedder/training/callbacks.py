"""Keras callbacks of the trainer: validation retrieval, stopping rules, collapse detection,
history."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import keras
import numpy as np

from embedder.metrics import retrieval_scores

COLLAPSE_ADVICE = (
    "Triplet training collapsed: every embedding is moving onto one point (the loss sits "
    "at the margin and negative distances shrink to ~0). What to change: use "
    "loss='batch_all' (the default) or 'semi_hard' instead of 'batch_hard', lower the "
    "learning rate (e.g. 1e-4) or keep a warm-up, use more images per class in a batch "
    "(samples_per_class), and check that the labels are right."
)


class RetrievalValidation(keras.callbacks.Callback):
    """Embed a held-out set after each epoch and log its retrieval scores.

    Adds ``val_precision_at_1``, ``val_r_precision``, ``val_map_at_r`` and
    ``val_spread`` (mean distance between the validation embeddings, ~1.41 for random
    unit vectors and ~0 after a collapse) to the epoch logs, so that ``EarlyStopping``,
    the progress bar and ``History`` all see them.

    Parameters
    ----------
    encoder : keras.Model
        The encoder being trained (shared with the training model).
    dataset : tf.data.Dataset
        Batches of validation images, in the order of ``labels``.
    labels : array-like of shape (n,)
        Class label of each row.
    """

    def __init__(self, encoder, dataset, labels):
        super().__init__()
        self.encoder = encoder
        self.dataset = dataset
        self.labels = np.asarray(labels)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        embeddings = self.encoder.predict(self.dataset, verbose=0)
        scores = retrieval_scores(embeddings, self.labels)
        logs["val_precision_at_1"] = scores["precision_at_1"]
        logs["val_r_precision"] = scores["r_precision"]
        logs["val_map_at_r"] = scores["map_at_r"]
        logs["val_spread"] = _mean_pairwise_distance(embeddings)


def _mean_pairwise_distance(embeddings, max_items=512):
    # A subsample is plenty to tell "spread out" from "one point".
    e = np.asarray(embeddings, dtype=np.float64)[:max_items]
    if len(e) < 2:
        return 0.0
    sq = np.sum(e**2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * e @ e.T, 0.0)
    n = len(e)
    return float(np.sqrt(d2).sum() / (n * (n - 1)))


class CollapseDetector(keras.callbacks.Callback):
    """Detect the classic triplet-training collapse and say what to change.

    An epoch counts as collapsed when the mean distance between embeddings of different
    classes (``neg_distance`` from the training metrics, else ``val_spread``) falls below
    ``min_distance``, or when the loss is pinned at the margin while positive and negative
    distances are equal (nothing is being separated). The flag is written to the logs as
    ``collapsed`` (0/1) for every epoch, so it lands in the history; the first collapsed
    epoch raises a ``UserWarning`` with advice, and ``patience`` collapsed epochs in a row
    stop training (early-stopping then restores the best weights, if any).

    Parameters
    ----------
    margin : float
        The loss margin (for the "pinned at the margin" test).
    min_distance : float, default=0.05
        Embeddings are unit-norm, so random ones sit ~1.41 apart; below this they are
        effectively one point.
    patience : int, default=3
        Collapsed epochs in a row that stop training.
    """

    def __init__(self, margin, min_distance=0.05, patience=3):
        super().__init__()
        self.margin = float(margin)
        self.min_distance = float(min_distance)
        self.patience = int(patience)
        self.collapsed_epochs = []
        self._streak = 0
        self._warned = False
        self.stop_reason = None

    def on_train_begin(self, logs=None):
        # One detector object may serve several ``fit`` calls: each starts afresh.
        self.collapsed_epochs = []
        self._streak = 0
        self._warned = False
        self.stop_reason = None

    def is_collapsed(self, logs):
        """Whether the epoch ``logs`` show a collapse."""
        # The training batches' negative distance is the direct signal; the validation
        # spread stands in when the loss logs no distances (offline triplets).
        spread = logs.get("neg_distance", logs.get("val_spread"))
        if spread is not None and spread < self.min_distance:
            return True
        loss, pos, neg = logs.get("loss"), logs.get("pos_distance"), logs.get("neg_distance")
        if None in (loss, pos, neg) or self.margin <= 0:
            return False
        pinned = abs(loss - self.margin) <= 0.02 * self.margin
        return bool(pinned and abs(neg - pos) < 0.02 * self.margin)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        collapsed = self.is_collapsed(logs)
        logs["collapsed"] = float(collapsed)
        if not collapsed:
            self._streak = 0
            return
        self.collapsed_epochs.append(epoch)
        self._streak += 1
        if not self._warned:
            self._warned = True
            warnings.warn(f"epoch {epoch + 1}: {COLLAPSE_ADVICE}", UserWarning, stacklevel=2)
        if self._streak >= self.patience:
            self.stop_reason = f"collapse: {self._streak} collapsed epochs in a row"
            self.model.stop_training = True


class HistoryRecorder(keras.callbacks.Callback):
    """The whole run's per-epoch logs, kept across a resume from a checkpoint folder.

    ``keras.callbacks.History`` only holds the epochs of the current ``fit`` call, so a
    run resumed by ``BackupAndRestore`` would report only its last epochs. This recorder
    stores the logs in ``checkpoint_dir/history.json`` after every epoch and, when a
    run resumes at epoch ``e``, continues from the first ``e`` recorded epochs.

    Parameters
    ----------
    checkpoint_dir : str, path-like or None
        Where to keep ``history.json``; None keeps the history in memory only.

    Attributes
    ----------
    history : dict of str -> list of float
        Per-epoch logs of the whole run (non-finite values as ``nan``).
    """

    def __init__(self, checkpoint_dir=None):
        super().__init__()
        self.checkpoint_dir = checkpoint_dir
        self.history = {}

    @property
    def _path(self):
        return None if self.checkpoint_dir is None else Path(self.checkpoint_dir) / "history.json"

    def on_train_begin(self, logs=None):
        self.history = {}
        path = self._path
        if path is not None and path.is_file():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                saved = {}  # a damaged history is not worth failing the run for
            if isinstance(saved, dict):
                self.history = {k: [math.nan if v is None else float(v) for v in vals]
                                for k, vals in saved.items() if isinstance(vals, list)}

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for key in set(self.history) | set(logs):
            values = self.history.setdefault(key, [])
            del values[epoch:]  # a resumed run rewrites the epochs after its backup
            values.extend([math.nan] * (epoch - len(values)))
            values.append(float(logs[key]) if key in logs else math.nan)
        if self._path is not None:
            from embedder.files import atomic_write_text

            clean = {k: [v if math.isfinite(v) else None for v in vals]
                     for k, vals in self.history.items()}
            atomic_write_text(self._path, json.dumps(clean))


class ScheduleLogger(keras.callbacks.Callback):
    """Log the learning rate and whether the backbone was frozen, for every epoch.

    ``learning_rate`` is the optimizer's rate at the end of the epoch (its schedule at the
    step count reached, as ``keras.callbacks.LearningRateScheduler`` logs it);
    ``backbone_frozen`` is 1.0 in the epochs that trained only the embedding head
    (:mod:`embedder.training.fine_tuning`), else 0.0.

    Parameters
    ----------
    backbone_frozen : bool, default=False
        Whether the ``fit`` this logger serves trains only the head.
    """

    def __init__(self, backbone_frozen=False):
        super().__init__()
        self.backbone_frozen = bool(backbone_frozen)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        rate = self.model.optimizer.learning_rate  # LossScaleOptimizer passes it through
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))
        logs["backbone_frozen"] = float(self.backbone_frozen)


class PlateauStop(keras.callbacks.Callback):
    """Stop when the validation score stops rising by ``min_delta``; keep the best weights.

    Unlike ``keras.callbacks.EarlyStopping(min_delta=...)``, the weights kept are those of
    the best epoch, whatever its margin: ``min_delta`` only decides when the run has
    stopped making progress, so that noise in a small validation set neither extends
    training nor picks an older epoch. ``stop_reason`` says why it stopped (None while
    it has not).

    Parameters
    ----------
    monitor : str, default="val_map_at_r"
        A log key; higher is better.
    patience : int, default=5
        Epochs in a row without a rise of at least ``min_delta`` over the reference (the
        value at the last such rise) that stop training.
    min_delta : float, default=0.0
        Smallest rise that counts as progress.
    restore_best_weights : bool, default=True
        Set the best epoch's weights back at the end of training.

    Attributes
    ----------
    best_epoch : int or None
        0-based epoch of the highest value (None before the first).
    stopped_epoch : int or None
        0-based epoch after which it stopped training.
    stop_reason : str or None
        Why it stopped training.
    """

    def __init__(self, monitor="val_map_at_r", patience=5, min_delta=0.0,
                 restore_best_weights=True):
        super().__init__()
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.restore_best_weights = bool(restore_best_weights)
        self.on_train_begin()

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self.best_weights = -math.inf, None, None
        self.reference, self.wait = -math.inf, 0
        self.stopped_epoch, self.stop_reason = None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        if value > self.best:
            self.best, self.best_epoch = float(value), epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
        if value >= self.reference + self.min_delta:
            self.reference, self.wait = float(value), 0
            return
        self.wait += 1
        if self.wait >= max(1, self.patience):
            self.stopped_epoch = epoch
            self.stop_reason = (
                f"plateau: {self.monitor} did not rise by {self.min_delta:g} or more for "
                f"{self.wait} epochs (best {self.best:.4f} at epoch {self.best_epoch + 1})")
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class ConvergenceStop(keras.callbacks.Callback):
    """Stop when training has nothing left to learn: (almost) no active triplet.

    An epoch has converged when its ``active_fraction`` (the share of the batches' valid
    triplets that still violate the margin; the ``loss`` when the loss logs no active
    fraction) is at most ``tolerance``: the loss, and so its gradient, is then ~0.

    Parameters
    ----------
    patience : int, default=2
        Converged epochs in a row that stop training; 0 never stops.
    tolerance : float, default=1e-3
        Largest active fraction (or loss) that counts as converged.

    Attributes
    ----------
    stopped_epoch : int or None
        0-based epoch after which it stopped training.
    stop_reason : str or None
        Why it stopped training (None while it has not).
    """

    def __init__(self, patience=2, tolerance=1e-3):
        super().__init__()
        self.patience = int(patience)
        self.tolerance = float(tolerance)
        self.on_train_begin()

    def on_train_begin(self, logs=None):
        self.streak, self.stopped_epoch, self.stop_reason = 0, None, None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        key = "active_fraction" if "active_fraction" in logs else "loss"
        value = logs.get(key)
        if value is None or not self.patience:
            return
        self.streak = self.streak + 1 if value <= self.tolerance else 0
        if self.streak >= self.patience:
            self.stopped_epoch = epoch
            self.stop_reason = (f"converged: {key} <= {self.tolerance:g} for {self.streak} "
                                "epochs (nothing left to learn)")
            self.model.stop_training = True
