"""Keras metrics that watch the embedding space while a triplet loss trains.

Each metric is updated from one batch, ``update_state(y_true=labels, y_pred=embeddings)``,
computes one batch-level value in float32 and keeps the running mean of those values over
the batches seen (a :class:`keras.metrics.Mean`). A batch without anything to measure (no
valid triplet, no positive pair, ...) is skipped rather than counted as 0. Per-sample
weights are ignored: every value describes a whole batch.

Typical use: ``model.compile(loss=..., metrics=[ActiveTripletFraction(), ...])``. A
fraction of active triplets or a positive-negative distance gap that falls to 0 while the
norms' spread shrinks is the signature of collapse (every embedding on one point).
"""

import keras
from keras import ops

from embedder.distances import check_distance, check_embeddings, pairwise_distances
from embedder.mining import (
    batch_all_hinge_stats,
    check_margin,
    negative_mask,
    positive_mask,
    prepare_inputs,
)


class _BatchValueMean(keras.metrics.Mean):
    """Running mean of ``batch_value(y_true, y_pred) -> (value, weight)`` over batches."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        value, weight = self.batch_value(y_true, y_pred)
        return super().update_state(value, sample_weight=weight)

    def batch_value(self, y_true, y_pred):
        raise NotImplementedError


def _has(count):
    return ops.cast(count > 0, "float32")


@keras.saving.register_keras_serializable(package="embedder")
class ActiveTripletFraction(_BatchValueMean):
    """Fraction of valid triplets with ``d_ap - d_an + margin > 0`` (batch-all hinge > 0)."""

    def __init__(self, margin=0.2, distance="euclidean", name="active_fraction", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.margin = check_margin(margin)
        self.distance = check_distance(distance)

    def batch_value(self, y_true, y_pred):
        labels, embeddings = prepare_inputs(y_true, y_pred)
        d = pairwise_distances(embeddings, self.distance)
        _, n_positive, n_valid = batch_all_hinge_stats(d, labels, self.margin)
        return n_positive / ops.maximum(n_valid, 1.0), _has(n_valid)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "distance": self.distance}


class _PairDistanceMean(_BatchValueMean):
    def __init__(self, distance="euclidean", name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.distance = check_distance(distance)

    def pair_mask(self, labels):
        raise NotImplementedError

    def batch_value(self, y_true, y_pred):
        labels, embeddings = prepare_inputs(y_true, y_pred)
        d = pairwise_distances(embeddings, self.distance)
        mask = ops.cast(self.pair_mask(labels), "float32")
        count = ops.sum(mask)
        return ops.sum(d * mask) / ops.maximum(count, 1.0), _has(count)

    def get_config(self):
        return {**super().get_config(), "distance": self.distance}


@keras.saving.register_keras_serializable(package="embedder")
class MeanPositiveDistance(_PairDistanceMean):
    """Mean distance over the batch's positive pairs (``a != p``, same label)."""

    def __init__(self, distance="euclidean", name="pos_distance", dtype=None):
        super().__init__(distance=distance, name=name, dtype=dtype)

    def pair_mask(self, labels):
        return positive_mask(labels)


@keras.saving.register_keras_serializable(package="embedder")
class MeanNegativeDistance(_PairDistanceMean):
    """Mean distance over the batch's negative pairs (different labels)."""

    def __init__(self, distance="euclidean", name="neg_distance", dtype=None):
        super().__init__(distance=distance, name=name, dtype=dtype)

    def pair_mask(self, labels):
        return negative_mask(labels)


def _row_norm_moments(y_pred):
    # (mean, population std, weight) of the row norms; an empty batch is skipped.
    embeddings = check_embeddings(y_pred, name="y_pred")
    norms = ops.sqrt(ops.sum(ops.square(embeddings), axis=1))
    count = ops.cast(ops.shape(norms)[0], "float32")
    mean = ops.sum(norms) / ops.maximum(count, 1.0)
    std = ops.sqrt(ops.sum(ops.square(norms - mean)) / ops.maximum(count, 1.0))
    return mean, std, _has(count)


@keras.saving.register_keras_serializable(package="embedder")
class EmbeddingNormMean(_BatchValueMean):
    """Mean L2 norm of the rows of ``y_pred`` (``y_true`` is ignored)."""

    def __init__(self, name="norm_mean", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def batch_value(self, y_true, y_pred):
        mean, _, weight = _row_norm_moments(y_pred)
        return mean, weight


@keras.saving.register_keras_serializable(package="embedder")
class EmbeddingNormStd(_BatchValueMean):
    """Standard deviation (population) of the L2 norms of the rows of ``y_pred``."""

    def __init__(self, name="norm_std", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def batch_value(self, y_true, y_pred):
        _, std, weight = _row_norm_moments(y_pred)
        return std, weight
