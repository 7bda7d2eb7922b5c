"""The stage-one training run: build it from a :class:`TrainingConfig`, then run it.

In-batch losses (batch-all, batch-hard, semi-hard, contrastive) train with **one forward
pass per batch**: a class-balanced P x K batch goes through the encoder once and the loss
mines its triplets inside the batch (:class:`embedder.training.trainer.InBatchTrainer`, which
also logs the batch diagnostics from the loss's own distance matrix). The seed's offline
approach (``loss="triplet"``) is kept as a baseline: a three-input model runs anchor,
positive and negative through the *same* encoder (weight sharing).

:func:`build_training_run` assembles the compiled model, the dataset and the callbacks;
:func:`run_training` runs ``model.fit`` and returns the history. Benchmarks and tests use
the two halves directly; :func:`train_encoder` does both. A pretrained start trains in two
phases, one ``fit`` each: the head on a frozen backbone, then the whole encoder at a lower
rate (:mod:`embedder.training.fine_tuning`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil

import keras
import numpy as np
from sklearn.model_selection import train_test_split

from embedder.data.decoding import decode_errors
from embedder.data.image_pipeline import (
    decoded_in_memory,
    image_batches,
    offline_triplet_dataset,
    training_dataset,
)
from embedder.data.sampling import PKSampler
from embedder.training import fine_tuning
from embedder.training.callbacks import (
    CollapseDetector,
    ConvergenceStop,
    HistoryRecorder,
    PlateauStop,
    RetrievalValidation,
)
from embedder.training.checkpoints import claim_checkpoint_dir
from embedder.training.config import TrainingConfig
from embedder.training.multi_worker import (
    multi_worker_strategy,
    train_multi_worker,
    worker_config,
)

#: Runs of at most this many steps in all skip graph compilation (measured: a 1-epoch fit
#: of 30 images took 0.6 s eagerly vs 2.0 s compiled on 2 CPU cores).
EAGER_MAX_STEPS = 8
#: The validation side needs two images of a class to score retrieval, the training side
#: two to form a positive: below these sizes the split is skipped.
MIN_VALIDATION_PER_CLASS = 2
MIN_CLASS_SIZE_FOR_SPLIT = 4


@dataclasses.dataclass
class TrainingRun:
    """Everything ``model.fit`` needs, built by :func:`build_training_run`.

    Attributes
    ----------
    model : keras.Model
        The compiled training model (the encoder inside it is trained in place).
    encoder : keras.Model
        The encoder being trained.
    dataset : tf.data.Dataset
        Endless training batches.
    steps_per_epoch : int
        Batches per epoch (every image of every class is visited once per epoch).
    callbacks : list of keras.callbacks.Callback
        Validation, early stopping, collapse detection, history, then the caller's own:
        the callbacks of the whole run. Each ``fit`` adds its own in front: the
        learning-rate logger and, with ``checkpoint_dir``, the phase's backup.
    config : TrainingConfig
        The resolved configuration (margin, P and the fine-tuning phases filled in).
    validation : dict
        ``used`` (bool), ``n_images`` (validation images) and ``reason`` (why the split
        was skipped, else None).
    phases : list of embedder.training.fine_tuning.Phase
        One ``fit`` each; ``model`` is compiled for the first.
    strategy : tf.distribute.Strategy or None
        The strategy whose scope later phases are compiled in.
    sampler : embedder.data.sampling.PKSampler or None
        The in-batch losses' sampler (None for ``loss="triplet"``): each ``fit`` sets the
        epoch it starts at.
    """

    model: keras.Model
    encoder: keras.Model
    dataset: object
    steps_per_epoch: int
    callbacks: list
    config: TrainingConfig
    validation: dict
    phases: list = dataclasses.field(default_factory=list)
    strategy: object = None
    sampler: object = None


def split_validation(y, fraction, random_state=None):
    """Stratified train/validation indices and, when no useful split exists, why.

    Parameters
    ----------
    y : ndarray of shape (n,)
        Class ids.
    fraction : float
        Share of the images held out; 0 disables the split.
    random_state : int or None
        Seed of the split.

    Returns
    -------
    train_idx : ndarray of int
    val_idx : ndarray of int or None
        None when the split was skipped.
    reason : str or None
        Why it was skipped (None when a split was made).
    """
    y = np.asarray(y)
    indices = np.arange(len(y))
    if not fraction:
        return indices, None, "validation_fraction=0"
    classes, counts = np.unique(y, return_counts=True)
    n_val = int(round(fraction * len(y)))
    needed = MIN_VALIDATION_PER_CLASS * len(classes)
    if counts.min() < MIN_CLASS_SIZE_FOR_SPLIT:
        return indices, None, (
            f"the smallest class has {counts.min()} images, a split needs at least "
            f"{MIN_CLASS_SIZE_FOR_SPLIT} per class")
    if n_val < needed or len(y) - n_val < needed:
        return indices, None, (
            f"validation_fraction={fraction:g} of {len(y)} images gives {n_val} validation "
            f"images, retrieval needs at least {needed} ({MIN_VALIDATION_PER_CLASS} per "
            f"class for {len(classes)} classes) on each side")
    train_idx, val_idx = train_test_split(indices, test_size=n_val, stratify=y,
                                          random_state=random_state)
    return np.sort(train_idx), np.sort(val_idx), None


def _take(X, idx):
    return X[idx] if isinstance(X, np.ndarray) else np.asarray(X)[idx]


def learning_rate_schedule(config, steps_per_epoch, epochs=None, scale=1.0):
    """Linear warm-up then cosine decay to 1% of the peak ``config.learning_rate * scale``.

    The schedule spans ``epochs`` (default ``config.epochs``): one phase of fine-tuning
    has its own schedule over its own epochs.
    """
    # A cold start at full rate is what tips triplet training into the collapsed state,
    # and a decaying rate makes the last epochs settle.
    epochs = config.epochs if epochs is None else epochs
    total = max(1, steps_per_epoch * epochs)
    warmup = min(int(steps_per_epoch * config.warmup_epochs), total - 1)
    rate = config.learning_rate * scale
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=rate * 0.1 if warmup else rate,
        decay_steps=max(1, total - warmup), alpha=0.01,
        warmup_target=rate if warmup else None, warmup_steps=warmup,
    )


def make_strategy(name):
    """The ``tf.distribute`` strategy named by ``TrainingConfig.strategy`` (None: none)."""
    if name is None:
        return None
    if name == "mirrored":
        return _mirrored_strategy()
    if name == "multi_worker":
        return multi_worker_strategy()
    raise ValueError(f"strategy must be None, 'mirrored' or 'multi_worker', got {name!r}")


@functools.cache
def _mirrored_strategy():
    # One per process, like the devices it spans: a second MirroredStrategy in the same
    # process reuses the collective-op instance keys of the first, and an all-gather
    # (cross_replica=True) after an all-reduce then aborts ("Collective instance 100
    # expected type 2 ... but got type 0").
    import tensorflow as tf

    return tf.distribute.MirroredStrategy()


def strategy_scope(strategy):
    """``strategy.scope()``, or a no-op context for ``None``."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


@contextlib.contextmanager
def dtype_policy(precision):
    """Build layers under the mixed-precision ``precision`` policy; restore the old one."""
    if precision is None:
        yield
        return
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _training_model(encoder, config, n_classes=None, steps=1):
    """The model ``fit`` runs: the in-batch trainer, or the three-input siamese form."""
    if config.in_batch:
        from embedder.training.trainer import InBatchTrainer

        model = InBatchTrainer(encoder, config.loss, margin=config.margin,
                               distance=config.distance, loss_params=config.loss_settings(),
                               cross_replica=config.cross_replica, n_classes=n_classes,
                               memory_size=config.memory_size,
                               memory_warmup=round(config.memory_warmup_epochs * steps))
        # BackupAndRestore needs a built model; the encoder inside already is
        model.build(encoder.input_shape)
        return model
    from embedder.losses.keras_losses import OfflineTripletLoss

    shape = encoder.input_shape[1:]
    inputs = [keras.Input(shape=shape, name=n) for n in ("anchor", "positive", "negative")]
    # One encoder object called three times: the weights are shared and the gradients of
    # its three uses add up in one backward pass.
    stacked = keras.ops.stack([encoder(x) for x in inputs], axis=1)
    model = keras.Model(inputs, stacked, name="offline_triplet_trainer")
    model.offline_loss = OfflineTripletLoss(margin=config.margin, distance=config.distance)
    return model


def _compile(model, config, steps, phase):
    """Compile ``model`` for ``phase``: a new optimizer, so a phase that trains other
    variables starts with fresh moments and its own schedule."""
    schedule = learning_rate_schedule(config, steps, phase.epochs, phase.rate_scale)
    optimizer = keras.optimizers.Adam(schedule)
    if config.precision == "mixed_float16":
        # float16 gradients underflow without loss scaling; bfloat16 has float32's range
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(
        optimizer=optimizer, loss=getattr(model, "offline_loss", None),
        # Tracing the compiled step costs 1-2 s; a handful of steps run faster eagerly.
        run_eagerly=steps * phase.epochs <= EAGER_MAX_STEPS,
    )


def _dataset(X_train, y_train, config, input_shape):
    """Training batches, steps per epoch and sampler (None: offline triplets)."""
    batch_size = config.classes_per_batch * config.samples_per_class
    if not config.in_batch:
        steps = max(1, -(-len(y_train) // batch_size))
        data = offline_triplet_dataset(X_train, y_train, input_shape, batch_size,
                                       steps * batch_size, config.random_state)
        return data, steps, None
    sampler = PKSampler(y_train, config.classes_per_batch, config.samples_per_class,
                        config.random_state)
    data = training_dataset(X_train, y_train, sampler, input_shape, augment=config.augment)
    return data, len(sampler), sampler


def _callbacks(encoder, X, y, val_idx, config, input_shape):
    callbacks = []
    if val_idx is not None:
        # decoded once: validation reads the same images after every epoch
        val_X = decoded_in_memory(_take(X, val_idx), input_shape)
        val_data = image_batches(val_X, input_shape, batch_size=256)
        callbacks.append(RetrievalValidation(encoder, val_data, y[val_idx]))
        callbacks.append(PlateauStop("val_map_at_r", patience=config.patience,
                                     min_delta=config.min_delta))
    callbacks.append(ConvergenceStop(patience=config.converged_patience))
    callbacks.append(CollapseDetector(margin=config.margin))
    return callbacks


def stop_summary(run, history) -> dict:
    """Why the training of ``run`` ended and which epoch's weights it kept.

    Parameters
    ----------
    run : TrainingRun
        A run after :func:`run_training`.
    history : dict
        Its history.

    Returns
    -------
    dict
        ``reason`` (the stopping rule's words, or ``"reached epochs=N"``),
        ``epochs_run`` and ``epoch_kept`` (1-based: the best validation epoch when a
        validation split restored its weights, else the last epoch).
    """
    epochs_run = len(history.get("loss", []))
    reasons = [c.stop_reason for c in run.callbacks if getattr(c, "stop_reason", None)]
    reason = reasons[0] if reasons else f"reached epochs={run.config.epochs}"
    kept = epochs_run
    for callback in run.callbacks:
        if isinstance(callback, PlateauStop) and callback.best_epoch is not None:
            kept = callback.best_epoch + 1
    return {"reason": reason, "epochs_run": epochs_run, "epoch_kept": kept}


def build_training_run(encoder, X, y, config, *, input_shape, strategy=None, callbacks=(),
                       pretrained=False):
    """Assemble the compiled model, data and callbacks of one training run.

    Parameters
    ----------
    encoder : keras.Model
        Maps images (float32 pixels, 0..255) to unit-norm embeddings; trained in place.
        Build it inside ``strategy_scope(strategy)`` when a strategy is given.
    X : ndarray of shape (n, h, w, c), or 1-D array of image paths
        Training images.
    y : ndarray of int of shape (n,)
        Class ids ``0..n_classes-1``; every class needs at least two images.
    config : TrainingConfig
        The settings, validated by the caller (:meth:`TrainingConfig.validate`; the
        estimator's parameter validation); resolved here.
    input_shape : tuple of int
        Shape the images are read in (paths are decoded to it).
    strategy : tf.distribute.Strategy or None, default=None
        From :func:`make_strategy`; the model is built and compiled in its scope.
    callbacks : sequence of keras.callbacks.Callback, default=()
        Extra callbacks, run after the trainer's own. With a frozen-backbone phase they
        see the run as one training: ``on_train_begin`` once, before the first phase,
        and ``on_train_end`` once, after the last.
    pretrained : bool, default=False
        Whether ``encoder`` starts from pretrained weights: with
        ``freeze_backbone_epochs=None`` the first epoch then trains only the head.

    Returns
    -------
    TrainingRun

    Raises
    ------
    ValueError
        For invalid settings, or a frozen-backbone phase asked of an encoder without
        the named embedding head (:func:`embedder.training.fine_tuning.check_head`).
    """
    y = np.asarray(y)
    if config.strategy == "multi_worker":
        config = worker_config(config, strategy)  # only the chief writes checkpoint_dir
    train_idx, val_idx, reason = split_validation(y, config.validation_fraction,
                                                  config.random_state)
    X_train, y_train = _take(X, train_idx), y[train_idx]
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    config = config.resolve(len(np.unique(y_train)), n_replicas=replicas,
                            pretrained=pretrained)
    fine_tuning.check_head(encoder, config)
    phases = fine_tuning.plan_phases(config)
    dataset, steps, sampler = _dataset(X_train, y_train, config, input_shape)
    with strategy_scope(strategy):
        model = _training_model(encoder, config, int(np.max(y)) + 1, steps)
        _compile(model, config, steps, phases[0])
    if config.checkpoint_dir is not None:
        claim_checkpoint_dir(config, encoder, X_train, y_train, input_shape)
    own = _callbacks(encoder, X, y, val_idx, config, input_shape)
    own.append(HistoryRecorder(config.checkpoint_dir))
    validation = {"used": val_idx is not None, "reason": reason,
                  "n_images": 0 if val_idx is None else len(val_idx)}
    return TrainingRun(model, encoder, dataset, steps, own + list(callbacks), config,
                       validation, phases, strategy, sampler)


def run_training(run):
    """Run one ``model.fit`` per phase of ``run``; return the whole run's history.

    A frozen-backbone phase (see :mod:`embedder.training.fine_tuning`) trains only the embedding
    head; the next phase is compiled with its own optimizer and schedule and continues
    at the epoch where the first stopped. Early stopping or a collapse in a phase ends
    the run. The encoder keeps its ``trainable`` flags.

    Returns
    -------
    dict of str -> list of float
        Per-epoch ``loss``, ``active_fraction``, ``pos_distance``, ``neg_distance``,
        ``norm_mean``, ``norm_std``, ``val_precision_at_1``, ``val_r_precision``,
        ``val_map_at_r``, ``val_spread``, ``collapsed``, ``learning_rate`` (at the end of
        the epoch) and ``backbone_frozen`` (those that apply), all phases in order;
        after a resume from ``checkpoint_dir`` it holds the earlier epochs too.
    """
    if run.config.strategy == "multi_worker":
        return train_multi_worker(run)  # Keras's fit fails under that strategy
    phases = run.phases or fine_tuning.plan_phases(run.config)
    flags = fine_tuning.trainable_flags(run.encoder)
    try:
        with decode_errors():
            for index, phase in enumerate(phases):
                fine_tuning.set_phase_layers(run.encoder, phase, flags)
                if index:
                    with strategy_scope(run.strategy):
                        _compile(run.model, run.config, run.steps_per_epoch, phase)
                fine_tuning.fit_phase(run, phases, index)
                if run.model.stop_training:
                    break
            if len(phases) > 1:
                fine_tuning.end_run(run.callbacks)  # e.g. early stopping's best weights
    finally:
        fine_tuning.restore_trainable(flags)
    if index < len(phases) - 1 and run.config.checkpoint_dir is not None:
        # the last phase's backup deletes the folder of a finished run; it did not run
        shutil.rmtree(run.config.checkpoint_dir, ignore_errors=True)
    recorder = next(c for c in run.callbacks if isinstance(c, HistoryRecorder))
    return recorder.history


def train_encoder(encoder, X, y, config, *, input_shape, strategy=None, callbacks=(),
                  pretrained=False):
    """Train ``encoder`` in place; return the history dict (validate, build, then run).

    See :func:`build_training_run` for the parameters and :func:`run_training` for the
    returned history.
    """
    run = build_training_run(encoder, X, y, config.validate(), input_shape=input_shape,
                             strategy=strategy, callbacks=callbacks, pretrained=pretrained)
    return run_training(run)
