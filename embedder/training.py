"""The stage-one training loop.

In-batch losses (batch-all, batch-hard, semi-hard, contrastive) train with **one forward
pass per batch**: a class-balanced P x K batch goes through the encoder once and the loss
mines its triplets inside the batch. The seed's offline approach (``loss="triplet"``) is
kept as a baseline: a three-input model runs anchor, positive and negative through the
*same* encoder (weight sharing), and one loss back-propagates through its three uses.

Both are plain compiled ``keras.Model.fit`` runs, so Keras's progress bar, callbacks
(early stopping with best-weights restore, per-epoch backups that a later call resumes
from) and ``History`` apply unchanged.
"""

from __future__ import annotations

import contextlib
import math

import keras
import numpy as np
from sklearn.model_selection import train_test_split

from embedder.callbacks import CollapseDetector, RetrievalValidation
from embedder.data import decode_errors, image_batches, offline_triplet_dataset, training_dataset
from embedder.losses import default_margin, get_loss
from embedder.sampling import PKSampler
from embedder.training_metrics import (
    ActiveTripletFraction,
    EmbeddingNormMean,
    EmbeddingNormStd,
    MeanNegativeDistance,
    MeanPositiveDistance,
)

TARGET_BATCH_SIZE = 64
#: Runs of at most this many steps in all skip graph compilation (measured: a 1-epoch fit
#: of 30 images took 0.6 s eagerly vs 2.0 s compiled on 2 CPU cores).
EAGER_MAX_STEPS = 8


def default_classes_per_batch(n_classes, samples_per_class):
    """P for a P x K batch of about ``TARGET_BATCH_SIZE`` images (at least 2 classes)."""
    return int(min(n_classes, max(2, TARGET_BATCH_SIZE // samples_per_class)))


def split_validation(y, fraction, random_state=None):
    """Stratified train/validation indices, or ``(all, None)`` when no useful split exists.

    Validation retrieval needs at least two images of a class on the validation side and
    the training side keeps at least two per class (to form positives), so tiny sets are
    trained without a validation split.
    """
    y = np.asarray(y)
    indices = np.arange(len(y))
    if not fraction:
        return indices, None
    classes, counts = np.unique(y, return_counts=True)
    n_val = int(round(fraction * len(y)))
    if n_val < 2 * len(classes) or counts.min() < 4 or len(y) - n_val < 2 * len(classes):
        return indices, None
    train_idx, val_idx = train_test_split(
        indices, test_size=n_val, stratify=y, random_state=random_state
    )
    return np.sort(train_idx), np.sort(val_idx)


def _take(X, idx):
    return X[idx] if isinstance(X, np.ndarray) else np.asarray(X)[idx]


def _learning_rate(learning_rate, steps_per_epoch, epochs, warmup_epochs):
    # Linear warm-up then cosine decay: a cold start at full rate is what tips triplet
    # training into the collapsed state, and a decaying rate makes the last epochs settle.
    total = max(1, steps_per_epoch * epochs)
    warmup = min(int(steps_per_epoch * warmup_epochs), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate * 0.1 if warmup else learning_rate,
        decay_steps=max(1, total - warmup),
        alpha=0.01,
        warmup_target=learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def _training_model(encoder, loss_name):
    """The model that ``fit`` runs: the encoder itself, or the three-input siamese form."""
    shape = encoder.input_shape[1:]
    if loss_name != "triplet":
        inputs = keras.Input(shape=shape, name="images")
        return keras.Model(inputs, encoder(inputs), name="in_batch_trainer")
    inputs = [keras.Input(shape=shape, name=n) for n in ("anchor", "positive", "negative")]
    # One encoder object called three times: the weights are shared and the gradients of
    # its three uses add up in one backward pass.
    stacked = keras.ops.stack([encoder(x) for x in inputs], axis=1)
    return keras.Model(inputs, stacked, name="offline_triplet_trainer")


def train_encoder(
    encoder,
    X,
    y,
    *,
    input_shape,
    loss="batch_all",
    margin=None,
    distance="euclidean",
    classes_per_batch=None,
    samples_per_class=4,
    epochs=20,
    learning_rate=1e-3,
    warmup_epochs=1,
    validation_fraction=0.1,
    augment=False,
    patience=5,
    checkpoint_dir=None,
    strategy=None,
    random_state=None,
    verbose=0,
    callbacks=(),
):
    """Train ``encoder`` in place with a triplet-style loss; return the history dict.

    Parameters
    ----------
    encoder : keras.Model
        Maps images (float32 pixels, 0..255) to unit-norm embeddings.
    X : ndarray of shape (n, h, w, c), or 1-D array of image paths
    y : ndarray of int of shape (n,)
        Class ids ``0..n_classes-1``; every class needs at least two images.
    input_shape : tuple of int
        Shape the images are read in (paths are decoded to it).
    loss, margin, distance
        See :func:`embedder.losses.get_loss`; ``margin=None`` takes the loss's default.
    classes_per_batch, samples_per_class : int
        P and K of the class-balanced batches (P defaults to about 64 / K classes).
    epochs, learning_rate, warmup_epochs
        Adam with linear warm-up then cosine decay.
    validation_fraction : float
        Stratified hold-out for validation P@1 and MAP@R after each epoch; early stopping
        with ``patience`` and best-weights restore monitor ``val_map_at_r``.
    augment : bool
        Random flips, shifts and brightness changes.
    checkpoint_dir : str or None
        Per-epoch backups there; a later call with the same folder resumes an interrupted
        run from its last finished epoch.
    strategy : tf.distribute.Strategy or None
    random_state : int or None
    verbose : int
        0 silent, 1 progress bar, 2 one line per epoch.
    callbacks : sequence of keras.callbacks.Callback
        Extra callbacks, run after the trainer's own.

    Returns
    -------
    dict of str -> list
        Per-epoch ``loss``, ``active_fraction``, ``pos_distance``, ``neg_distance``,
        ``norm_mean``, ``norm_std``, ``val_precision_at_1``, ``val_map_at_r``,
        ``val_spread``, ``collapsed`` and ``learning_rate`` (the entries that apply).
    """
    y = np.asarray(y)
    margin = default_margin(loss) if margin is None else margin
    train_idx, val_idx = split_validation(y, validation_fraction, random_state)
    X_train, y_train = _take(X, train_idx), y[train_idx]
    n_classes = len(np.unique(y_train))
    if classes_per_batch is None:
        classes_per_batch = default_classes_per_batch(n_classes, samples_per_class)

    if loss == "triplet":
        batch_size = classes_per_batch * samples_per_class
        steps = max(1, math.ceil(len(y_train) / batch_size))
        dataset = offline_triplet_dataset(
            X_train, y_train, input_shape, batch_size, steps * batch_size, random_state
        )
        metrics = []
    else:
        sampler = PKSampler(y_train, classes_per_batch, samples_per_class, random_state)
        steps = len(sampler)
        dataset = training_dataset(X_train, y_train, sampler, input_shape, augment=augment)
        metrics = [
            ActiveTripletFraction(margin=margin, distance=distance),
            MeanPositiveDistance(distance=distance),
            MeanNegativeDistance(distance=distance),
            EmbeddingNormMean(),
            EmbeddingNormStd(),
        ]

    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = _training_model(encoder, loss)
        model.compile(
            optimizer=keras.optimizers.Adam(
                _learning_rate(learning_rate, steps, epochs, warmup_epochs)
            ),
            loss=get_loss(loss, margin=margin, distance=distance),
            metrics=metrics or None,
            # Tracing the compiled step costs 1-2 s; a handful of steps run faster eagerly.
            run_eagerly=steps * epochs <= EAGER_MAX_STEPS,
        )

    extra_callbacks, callbacks = list(callbacks), []
    if val_idx is not None:
        val_data = image_batches(_take(X, val_idx), input_shape, batch_size=256)
        callbacks.append(RetrievalValidation(encoder, val_data, y[val_idx]))
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_map_at_r", mode="max", patience=patience,
                restore_best_weights=True, verbose=int(verbose > 0),
            )
        )
    callbacks.append(CollapseDetector(margin=margin))
    if checkpoint_dir is not None:
        callbacks.append(keras.callbacks.BackupAndRestore(str(checkpoint_dir)))

    with decode_errors():
        history = model.fit(
            dataset, epochs=epochs, steps_per_epoch=steps,
            callbacks=callbacks + extra_callbacks,
            verbose=verbose, shuffle=False,  # the sampler already shuffles
        )
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}
