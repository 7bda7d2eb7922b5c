"""The stage-one training run: build it from a :class:`~embedder.config.TrainingConfig`, run it.

In-batch losses (batch-all, batch-hard, semi-hard, contrastive) train with **one forward
pass per batch**: a class-balanced P x K batch goes through the encoder once and the loss
mines its triplets inside the batch (:class:`embedder.trainer_model.InBatchTrainer`, which
also logs the batch diagnostics from the loss's own distance matrix). The seed's offline
approach (``loss="triplet"``) is kept as a baseline: a three-input model runs anchor,
positive and negative through the *same* encoder (weight sharing).

:func:`build_training_run` assembles the compiled model, the dataset and the callbacks;
:func:`run_training` runs ``model.fit`` and returns the history. Benchmarks and tests use
the two halves directly; :func:`train_encoder` does both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import keras
import numpy as np
from sklearn.model_selection import train_test_split

from embedder.callbacks import CollapseDetector, HistoryRecorder, RetrievalValidation
from embedder.checkpoints import claim_checkpoint_dir
from embedder.config import MULTI_WORKER_UNSUPPORTED, TrainingConfig
from embedder.decoding import decode_errors
from embedder.image_pipeline import (
    image_batches,
    offline_triplet_dataset,
    training_dataset,
)
from embedder.sampling import PKSampler

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
        Validation, early stopping, collapse detection, checkpoints, history, then the
        caller's own.
    config : TrainingConfig
        The resolved configuration (margin and P filled in).
    validation : dict
        ``used`` (bool), ``n_images`` (validation images) and ``reason`` (why the split
        was skipped, else None).
    """

    model: keras.Model
    encoder: keras.Model
    dataset: object
    steps_per_epoch: int
    callbacks: list
    config: TrainingConfig
    validation: dict


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


def learning_rate_schedule(config, steps_per_epoch):
    """Linear warm-up then cosine decay to 1% of ``config.learning_rate``."""
    # A cold start at full rate is what tips triplet training into the collapsed state,
    # and a decaying rate makes the last epochs settle.
    total = max(1, steps_per_epoch * config.epochs)
    warmup = min(int(steps_per_epoch * config.warmup_epochs), total - 1)
    rate = config.learning_rate
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
        raise ValueError(MULTI_WORKER_UNSUPPORTED)
    raise ValueError(f"strategy must be None or 'mirrored', got {name!r}")


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


def _training_model(encoder, config):
    """The model ``fit`` runs: the in-batch trainer, or the three-input siamese form."""
    if config.in_batch:
        from embedder.trainer_model import InBatchTrainer

        model = InBatchTrainer(encoder, config.loss, margin=config.margin,
                               distance=config.distance, soft=config.soft,
                               cross_replica=config.cross_replica)
        # BackupAndRestore needs a built model; the encoder inside already is
        model.build(encoder.input_shape)
        return model
    from embedder.losses import OfflineTripletLoss

    shape = encoder.input_shape[1:]
    inputs = [keras.Input(shape=shape, name=n) for n in ("anchor", "positive", "negative")]
    # One encoder object called three times: the weights are shared and the gradients of
    # its three uses add up in one backward pass.
    stacked = keras.ops.stack([encoder(x) for x in inputs], axis=1)
    model = keras.Model(inputs, stacked, name="offline_triplet_trainer")
    model.offline_loss = OfflineTripletLoss(margin=config.margin, distance=config.distance)
    return model


def _compile(model, config, steps):
    optimizer = keras.optimizers.Adam(learning_rate_schedule(config, steps))
    if config.precision == "mixed_float16":
        # float16 gradients underflow without loss scaling; bfloat16 has float32's range
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(
        optimizer=optimizer, loss=getattr(model, "offline_loss", None),
        # Tracing the compiled step costs 1-2 s; a handful of steps run faster eagerly.
        run_eagerly=steps * config.epochs <= EAGER_MAX_STEPS,
    )


def _dataset(X_train, y_train, config, input_shape):
    """Training batches and steps per epoch for the resolved ``config``."""
    batch_size = config.classes_per_batch * config.samples_per_class
    if not config.in_batch:
        steps = max(1, -(-len(y_train) // batch_size))
        data = offline_triplet_dataset(X_train, y_train, input_shape, batch_size,
                                       steps * batch_size, config.random_state)
        return data, steps
    sampler = PKSampler(y_train, config.classes_per_batch, config.samples_per_class,
                        config.random_state)
    data = training_dataset(X_train, y_train, sampler, input_shape, augment=config.augment)
    return data, len(sampler)


def _callbacks(encoder, X, y, val_idx, config, input_shape):
    callbacks = []
    if val_idx is not None:
        val_data = image_batches(_take(X, val_idx), input_shape, batch_size=256)
        callbacks.append(RetrievalValidation(encoder, val_data, y[val_idx]))
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_map_at_r", mode="max", patience=config.patience,
            restore_best_weights=True, verbose=int(config.verbose > 0)))
    callbacks.append(CollapseDetector(margin=config.margin))
    if config.checkpoint_dir is not None:
        callbacks.append(keras.callbacks.BackupAndRestore(str(config.checkpoint_dir)))
    return callbacks


def build_training_run(encoder, X, y, config, *, input_shape, strategy=None, callbacks=()):
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
        The settings; validated and resolved here.
    input_shape : tuple of int
        Shape the images are read in (paths are decoded to it).
    strategy : tf.distribute.Strategy or None, default=None
        From :func:`make_strategy`; the model is built and compiled in its scope.
    callbacks : sequence of keras.callbacks.Callback, default=()
        Extra callbacks, run after the trainer's own.

    Returns
    -------
    TrainingRun
    """
    y = np.asarray(y)
    config = config.validate()
    train_idx, val_idx, reason = split_validation(y, config.validation_fraction,
                                                  config.random_state)
    X_train, y_train = _take(X, train_idx), y[train_idx]
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    config = config.resolve(len(np.unique(y_train)), n_replicas=replicas)
    dataset, steps = _dataset(X_train, y_train, config, input_shape)
    with strategy_scope(strategy):
        model = _training_model(encoder, config)
        _compile(model, config, steps)
    if config.checkpoint_dir is not None:
        claim_checkpoint_dir(config, encoder, X_train, y_train, input_shape)
    own = _callbacks(encoder, X, y, val_idx, config, input_shape)
    own.append(HistoryRecorder(config.checkpoint_dir))
    validation = {"used": val_idx is not None, "reason": reason,
                  "n_images": 0 if val_idx is None else len(val_idx)}
    return TrainingRun(model, encoder, dataset, steps, own + list(callbacks), config,
                       validation)


def run_training(run):
    """Run ``model.fit`` for ``run``; return the whole run's history.

    Returns
    -------
    dict of str -> list of float
        Per-epoch ``loss``, ``active_fraction``, ``pos_distance``, ``neg_distance``,
        ``norm_mean``, ``norm_std``, ``val_precision_at_1``, ``val_r_precision``,
        ``val_map_at_r``, ``val_spread``, ``collapsed`` and ``learning_rate`` (those that
        apply); after a resume from ``checkpoint_dir`` it holds the earlier epochs too.
    """
    with decode_errors():
        run.model.fit(
            run.dataset, epochs=run.config.epochs, steps_per_epoch=run.steps_per_epoch,
            callbacks=run.callbacks, verbose=run.config.verbose,
            shuffle=False,  # the sampler already shuffles
        )
    recorder = next(c for c in run.callbacks if isinstance(c, HistoryRecorder))
    return recorder.history


def train_encoder(encoder, X, y, config, *, input_shape, strategy=None, callbacks=()):
    """Train ``encoder`` in place; return the history dict (build, then run).

    See :func:`build_training_run` for the parameters and :func:`run_training` for the
    returned history.
    """
    run = build_training_run(encoder, X, y, config, input_shape=input_shape,
                             strategy=strategy, callbacks=callbacks)
    return run_training(run)
