"""The five diagnostics that watch the embedding space while a triplet loss trains.

:func:`batch_diagnostics` computes them from a :class:`embedder.mining.BatchView`, i.e.
from the one distance matrix the loss also uses (see
:class:`embedder.trainer_model.InBatchTrainer`, which keeps their running means):

- ``active_fraction``: fraction of valid triplets with ``d_ap - d_an + margin > 0``
  (batch-all hinge > 1e-16);
- ``pos_distance`` / ``neg_distance``: mean distance over the positive pairs (``a != p``,
  same label) / the negative pairs (different labels);
- ``norm_mean`` / ``norm_std``: mean and (population) standard deviation of the L2 norms
  of the batch's rows.

Each is one batch-level float32 value with a weight of 1, or 0 when the batch has
nothing to measure (no valid triplet, no positive pair, ...), so that a running mean
skips that batch rather than counting it as 0. A fraction of active triplets or a
positive-negative distance gap that falls to 0 while the norms' spread shrinks is the
signature of collapse (every embedding on one point).
"""

import keras
from keras import ops

from embedder.distances import check_distance, check_embeddings, row_norms
from embedder.mining import batch_all_stats, batch_view, check_margin

#: Names of the diagnostics, in the order :class:`~embedder.trainer_model.InBatchTrainer`
#: logs them (after ``loss``).
DIAGNOSTICS = ("active_fraction", "pos_distance", "neg_distance", "norm_mean", "norm_std")


def _ratio(total, count):
    # (total / count, 1) or (0, 0) when count is 0: the batch is skipped.
    has = ops.cast(count > 0, "float32")
    return total / ops.maximum(count, 1.0), has


def _mean_over(values, mask):
    mask = ops.cast(mask, "float32")
    return _ratio(ops.sum(ops.where(mask > 0, values, 0.0)), ops.sum(mask))


def batch_diagnostics(view, margin, batch_all_terms=None):
    """``{name: (value, weight)}`` for the names in :data:`DIAGNOSTICS`.

    Parameters
    ----------
    view : embedder.mining.BatchView
        The batch's distances and masks (as the loss saw them).
    margin : float
        Margin of the active-triplet fraction.
    batch_all_terms : tuple of 3 tensors, optional
        ``(hinge_sum, n_active, n_valid)`` already computed by the batch-all loss on
        ``view`` with ``margin``; computed here when not given.

    Returns
    -------
    dict of str -> (float32 scalar, float32 scalar)
        The weight is 1, or 0 when the batch has nothing to measure.
    """
    if batch_all_terms is None:
        batch_all_terms = batch_all_stats(view.distances, view.positives, view.negatives, margin)
    _, n_active, n_valid = batch_all_terms
    norms = row_norms(view.embeddings)
    mean, has_rows = _ratio(ops.sum(norms), ops.cast(ops.shape(norms)[0], "float32"))
    variance, _ = _ratio(ops.sum(ops.square(norms - mean)), ops.sum(ops.ones_like(norms)))
    return {
        "active_fraction": _ratio(n_active, n_valid),
        "pos_distance": _mean_over(view.distances, view.positives),
        "neg_distance": _mean_over(view.distances, view.negatives),
        "norm_mean": (mean, has_rows),
        "norm_std": (ops.sqrt(variance), has_rows),
    }


# --------------------------------------------------------------------------- Keras metrics
# Stand-alone metric objects, each computing its own distance matrix from
# ``update_state(y_true=labels, y_pred=embeddings)``. The trainer does not use them (it
# shares one matrix with the loss); they remain for ``model.compile(metrics=[...])``.


class _DiagnosticMean(keras.metrics.Mean):
    """Running mean, over batches, of the diagnostic ``diagnostic`` of each batch."""

    diagnostic = None

    def __init__(self, margin=0.2, distance="euclidean", name=None, dtype=None):
        super().__init__(name=name or self.diagnostic, dtype=dtype)
        self.margin = check_margin(margin)
        self.distance = check_distance(distance)

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add the batch's value; ``sample_weight`` is ignored (it describes a batch)."""
        if self.diagnostic.startswith("norm"):
            y_pred = check_embeddings(y_pred, name="y_pred")
            y_true = ops.zeros(ops.shape(y_pred)[:1], "int32") if y_true is None else y_true
        view = batch_view(y_true, y_pred, self.distance)
        terms = None if self.diagnostic == "active_fraction" else (0.0, 0.0, 0.0)
        value, weight = batch_diagnostics(view, self.margin, terms)[self.diagnostic]
        return super().update_state(value, sample_weight=weight)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "distance": self.distance}


@keras.saving.register_keras_serializable(package="embedder")
class ActiveTripletFraction(_DiagnosticMean):
    """Fraction of valid triplets with ``d_ap - d_an + margin > 0`` (batch-all hinge > 0)."""

    diagnostic = "active_fraction"


@keras.saving.register_keras_serializable(package="embedder")
class MeanPositiveDistance(_DiagnosticMean):
    """Mean distance over the batch's positive pairs (``a != p``, same label)."""

    diagnostic = "pos_distance"


@keras.saving.register_keras_serializable(package="embedder")
class MeanNegativeDistance(_DiagnosticMean):
    """Mean distance over the batch's negative pairs (different labels)."""

    diagnostic = "neg_distance"


@keras.saving.register_keras_serializable(package="embedder")
class EmbeddingNormMean(_DiagnosticMean):
    """Mean L2 norm of the rows of ``y_pred`` (``y_true`` is ignored)."""

    diagnostic = "norm_mean"


@keras.saving.register_keras_serializable(package="embedder")
class EmbeddingNormStd(_DiagnosticMean):
    """Standard deviation (population) of the L2 norms of the rows of ``y_pred``."""

    diagnostic = "norm_std"
