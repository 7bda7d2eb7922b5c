"""The fine-tuning recipe: the new head on a frozen backbone first, then everything slower.

Keras's transfer-learning recipe for a pretrained backbone, as phases of one training run
(:func:`embedder.training.run_training` runs one ``fit`` per :class:`Phase`):

1. ``freeze_backbone_epochs`` epochs train only the embedding head (the layers named
   :data:`embedder.models.encoders.HEAD_LAYER_NAMES`); every other layer is ``trainable=False``,
   which in Keras 3 also runs its BatchNormalization in inference mode, so the backbone's
   weights and moving statistics stay as loaded while the random head settles.
2. The remaining epochs train every layer the user had not frozen, except the backbone's
   BatchNormalization, which stays in inference mode as in the Keras guide (a few small
   batches would overwrite the pretrained statistics), with a new optimizer whose warm-up
   and cosine decay peak at ``learning_rate * fine_tune_learning_rate_factor``.

Callbacks see the run as one training (:class:`SpanningCallback`): ``on_train_begin``
before the first phase, ``on_train_end`` after the last. Early stopping so keeps its best
weights and patience across phases, the collapse detector its streak and the history
recorder every epoch. Checkpoints are per phase (:func:`phase_backup`), so a resumed run
neither redoes nor skips a phase. The encoder leaves training with the ``trainable``
flags it came with (:func:`trainable_flags`, :func:`restore_trainable`).
"""

from __future__ import annotations

import dataclasses
import os

import keras

from embedder.models.encoders import HEAD_LAYER_NAMES
from embedder.training.callbacks import ScheduleLogger
from embedder.training.checkpoints import CheckedBackupAndRestore, resume_epoch

FROZEN = "frozen"
FINE_TUNE = "fine_tune"


@dataclasses.dataclass(frozen=True)
class Phase:
    """One ``fit`` call of a training run.

    Attributes
    ----------
    start : int
        Its first epoch (0-based, counted over the whole run).
    stop : int
        The epoch after its last one.
    backbone : {None, "frozen", "fine_tune"}
        ``"frozen"``: only the head trains; ``"fine_tune"``: all but the backbone's
        BatchNormalization; None: the layers are left as they are (training from scratch).
    rate_scale : float
        Factor on ``learning_rate`` of this phase's schedule.
    """

    start: int
    stop: int
    backbone: str | None = None
    rate_scale: float = 1.0

    @property
    def epochs(self) -> int:
        """Epochs in this phase."""
        return self.stop - self.start

    @property
    def backbone_frozen(self) -> bool:
        """Whether only the embedding head trains."""
        return self.backbone == FROZEN


def plan_phases(config) -> list[Phase]:
    """The phases of a resolved :class:`~embedder.training.config.TrainingConfig`.

    One phase over all epochs when ``freeze_backbone_epochs`` is 0; else a frozen-backbone
    phase, then (if epochs are left) a whole-encoder phase at the lowered rate.
    """
    freeze, epochs = config.freeze_backbone_epochs, config.epochs
    if not freeze:
        return [Phase(0, epochs)]
    phases = [Phase(0, freeze, FROZEN)]
    if freeze < epochs:
        phases.append(Phase(freeze, epochs, FINE_TUNE, config.fine_tune_learning_rate_factor))
    return phases


def check_head(encoder, config) -> None:
    """Raise ``ValueError`` when ``config`` freezes the backbone of a head-less encoder."""
    if not config.freeze_backbone_epochs:
        return
    if HEAD_LAYER_NAMES[0] not in {layer.name for layer in encoder.layers}:
        raise ValueError(
            f"freeze_backbone_epochs={config.freeze_backbone_epochs} needs an encoder whose "
            f"embedding head is a top-level layer named {HEAD_LAYER_NAMES[0]!r} (as "
            "embedder.models.encoders.embedding_head adds it), got encoder "
            f"{encoder.name!r} without one; set freeze_backbone_epochs=0 to train all its "
            "layers")


def all_layers(layer):
    """``layer`` and, depth first, every layer of the models nested in it."""
    yield layer
    for inner in getattr(layer, "layers", ()):  # only models (backbones) have ``layers``
        yield from all_layers(inner)


def trainable_flags(encoder) -> list:
    """``(layer, trainable)`` of every layer, outer before inner, for :func:`restore_trainable`."""
    return [(layer, layer.trainable) for layer in all_layers(encoder)]


def restore_trainable(flags) -> None:
    """Set the flags recorded by :func:`trainable_flags` back."""
    # Setting a model's flag sets its layers' too; outer layers come first, so every
    # nested layer ends with its own recorded flag.
    for layer, flag in flags:
        layer.trainable = flag


def set_phase_layers(encoder, phase, flags) -> None:
    """Make the layers of ``encoder`` trainable as ``phase.backbone`` asks.

    ``flags`` (from :func:`trainable_flags`, taken before the run) are what a
    ``"fine_tune"`` phase gives back, so layers the user froze stay frozen; then every
    BatchNormalization outside the head is frozen (inference mode).
    """
    if phase.backbone is None:
        return
    if phase.backbone_frozen:
        encoder.trainable = True  # a frozen outer model would hide its head's variables
        for layer in encoder.layers:
            if layer.name not in HEAD_LAYER_NAMES:
                layer.trainable = False
        return
    restore_trainable(flags)
    for layer in encoder.layers:
        if layer.name in HEAD_LAYER_NAMES:
            continue
        for inner in all_layers(layer):
            if isinstance(inner, keras.layers.BatchNormalization):
                inner.trainable = False


def phase_backup(checkpoint_dir, phases, index):
    """The ``BackupAndRestore`` of phase ``index``; None without a checkpoint folder.

    The last phase backs up into ``checkpoint_dir`` itself and, as a one-phase run does,
    deletes the folder when it completes. An earlier phase backs up into a sub-folder that
    is kept until then: a run interrupted in a later phase resumes by loading the finished
    phase's backup (its ``fit`` then has no epoch left) and the later phase's own backup.
    """
    if checkpoint_dir is None:
        return None
    if index == len(phases) - 1:
        return CheckedBackupAndRestore(os.fspath(checkpoint_dir))
    folder = os.path.join(os.fspath(checkpoint_dir),
                          f"phase{index + 1}_{phases[index].backbone}")
    return CheckedBackupAndRestore(folder, delete_checkpoint=False)


class SpanningCallback(keras.callbacks.Callback):
    """``callback`` as one phase of a run of several ``fit`` calls sees it.

    Keras calls ``on_train_begin`` and ``on_train_end`` around every ``fit``. The wrapped
    callback gets ``on_train_begin`` only in the first phase (``first=True``) and
    ``on_train_end`` never: :func:`end_run` calls it once, after the last phase. Every
    other hook is the wrapped callback's own bound method, so Keras still sees which
    batch hooks it implements (and dispatches the others asynchronously).

    Parameters
    ----------
    callback : keras.callbacks.Callback
        The callback of the whole run.
    first : bool
        Whether this is the run's first phase.
    """

    _HOOKS = ("on_epoch_begin", "on_epoch_end", "on_batch_begin", "on_batch_end",
              "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
              "on_test_batch_begin", "on_test_batch_end", "on_predict_begin",
              "on_predict_end", "on_predict_batch_begin", "on_predict_batch_end")

    def __init__(self, callback, first):
        super().__init__()
        self.callback = callback
        self.first = bool(first)
        self.async_safe = getattr(callback, "async_safe", False)
        for hook in self._HOOKS:
            setattr(self, hook, getattr(callback, hook))

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)

    def on_train_begin(self, logs=None):
        if self.first:
            self.callback.on_train_begin(logs)

    def on_train_end(self, logs=None):
        """Nothing: the run has not ended with this phase (see :func:`end_run`)."""


def fit_phase(run, phases, index) -> None:
    """Run the ``fit`` of phase ``index`` of ``run`` (a :class:`~embedder.training.TrainingRun`).

    Its own callbacks come first: the :class:`~embedder.training.callbacks.ScheduleLogger` and the
    phase's backup; the run's callbacks follow, wrapped in :class:`SpanningCallback`
    when the run has several phases. The model must be compiled for the phase. The
    sampler starts at the phase's first epoch, or at the epoch its backup resumes at.
    """
    phase = phases[index]
    own = [ScheduleLogger(phase.backbone_frozen)]
    backup = phase_backup(run.config.checkpoint_dir, phases, index)
    if backup is not None:
        own.append(backup)
    if run.sampler is not None:
        resumed = None if backup is None else resume_epoch(backup.backup_dir)
        run.sampler.set_epoch(phase.start if resumed is None else max(resumed, phase.start))
    callbacks = run.callbacks
    if len(phases) > 1:
        callbacks = [SpanningCallback(c, first=index == 0) for c in callbacks]
    # BackupAndRestore resumes a fit by setting Keras's private ``_initial_epoch``, which
    # fit never clears: left over, it would start this phase at the previous one's epoch.
    run.model._initial_epoch = None
    optimizer = run.model.optimizer
    if run.strategy is None and not optimizer.built:
        # Without a strategy Keras builds the optimizer inside the first trace of the
        # step; creating its slot variables there makes tf.function trace the step twice.
        optimizer.build(run.model.trainable_variables)
    run.model.fit(
        run.dataset, initial_epoch=phase.start, epochs=phase.stop,
        steps_per_epoch=run.steps_per_epoch, callbacks=own + callbacks,
        verbose=run.config.verbose,
        shuffle=False,  # the sampler already shuffles
    )


def end_run(callbacks) -> None:
    """``on_train_end`` of the run's callbacks, after its last phase."""
    for callback in callbacks:
        callback.on_train_end(None)
