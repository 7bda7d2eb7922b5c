"""The five diagnostics that watch the embedding space while a triplet loss trains.

:func:`batch_diagnostics` computes them from a :class:`embedder.losses.mining.BatchView`, i.e.
from the one distance matrix the loss also uses (see
:class:`embedder.training.trainer.InBatchTrainer`, which keeps their running means):

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

from embedder.distances import row_norms
from embedder.losses.mining import batch_all_stats

#: Names of the diagnostics, in the order :class:`~embedder.training.trainer.InBatchTrainer`
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
    view : embedder.losses.mining.BatchView
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
        batch_all_terms = batch_all_stats(
            view.distances, view.positives, view.negatives, margin, view.top_k
        )
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


class DiagnosticsMean(keras.metrics.Metric):
    """Running means of the five diagnostics, in one metric (two variable updates a step).

    ``update_state(values)`` takes the ``{name: (value, weight)}`` of
    :func:`batch_diagnostics`; a weight of 0 skips that diagnostic for the batch.
    ``result()`` is a dict keyed by :data:`DIAGNOSTICS` (0 where nothing was measured),
    which Keras logs as five separate entries.

    Parameters
    ----------
    name : str, default="diagnostics"
        Name of the object in Keras.
    dtype : str, optional
        Dtype of the result (losses compute in float32).
    """

    def __init__(self, name="diagnostics", dtype=None):
        super().__init__(name=name, dtype=dtype)
        shape = (len(DIAGNOSTICS),)
        self.total = self.add_variable(shape, initializer="zeros", name="total")
        self.count = self.add_variable(shape, initializer="zeros", name="count")

    def update_state(self, values):
        """Add one batch's ``{name: (value, weight)}``."""
        value = ops.stack([ops.cast(values[k][0], "float32") for k in DIAGNOSTICS])
        weight = ops.stack([ops.cast(values[k][1], "float32") for k in DIAGNOSTICS])
        self.total.assign_add(ops.where(weight > 0, value * weight, 0.0))
        self.count.assign_add(weight)

    def result(self):
        means = ops.where(self.count > 0, self.total / ops.maximum(self.count, 1e-12), 0.0)
        return {key: means[i] for i, key in enumerate(DIAGNOSTICS)}

    def reset_state(self):
        for variable in (self.total, self.count):
            variable.assign(ops.zeros_like(variable))
