"""The registered Keras losses around the functions of :mod:`embedder.losses`, and their names.

Each :class:`keras.losses.Loss` subclass is registered as ``embedder>ClassName`` (the
names in ``.keras`` files and configs) and is called by Keras as
``loss(y_true=labels, y_pred=embeddings)``. A batch loss is one number, so ``call`` returns
it repeated once per sample: the default ``"sum_over_batch_size"`` reduction gives back
exactly the batch loss, and Keras's per-replica scaling under ``tf.distribute`` applies
as for any built-in loss (a bare scalar would skip it). Sample weights therefore scale the
loss by their mean.

:data:`LOSSES` maps the loss names of DESIGN 3 to the classes; :func:`get_loss` builds one
by name, :func:`default_margin` gives its default margin. :mod:`embedder.losses` re-exports
every name here, and importing either module registers the classes.
"""

import keras
from keras import ops

from embedder.distances import check_distance
from embedder.losses import (
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
    contrastive_loss,
    semi_hard_triplet_loss,
    triplet_hinges,
)
from embedder.mining import check_flag, check_margin

DEFAULT_MARGINS = {
    "batch_all": 0.2,
    "batch_hard": 0.2,
    "semi_hard": 0.2,
    "contrastive": 0.5,
    "triplet": 0.2,
}


class _BatchLoss(keras.losses.Loss):
    """Keras wrapper of a batch-level loss function ``fn(labels, embeddings, ...)``.

    Parameters
    ----------
    margin : float, default=0.2
        Hinge margin between positive and negative distances.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Distance between embeddings: euclidean (zero gradient at zero distance),
        squared euclidean, or 1 - cosine similarity.
    cross_replica : bool, default=False
        Mine over the batch all-gathered from every replica (see :mod:`embedder.losses`).
    reduction : str, default="sum_over_batch_size"
        Keras's reduction of per-sample values (a batch loss returns one value per
        batch).
    name : str, optional
        Name of the object in Keras.
    dtype : str, optional
        Dtype of the result (losses compute in float32).
    """

    fn = None
    default_name = None

    def __init__(
        self,
        margin=0.2,
        distance="euclidean",
        cross_replica=False,
        reduction="sum_over_batch_size",
        name=None,
        dtype=None,
    ):
        super().__init__(name=name or self.default_name, reduction=reduction, dtype=dtype)
        self.margin = check_margin(margin)
        self.distance = check_distance(distance)
        self.cross_replica = check_flag(cross_replica, "cross_replica")

    def _settings(self):
        return {"margin": self.margin, "distance": self.distance,
                "cross_replica": self.cross_replica}

    def call(self, y_true, y_pred):
        loss = type(self).fn(y_true, y_pred, **self._settings())
        # Repeat per sample so that Keras's reductions return the batch loss unchanged.
        return ops.broadcast_to(loss, ops.shape(y_pred)[:1])

    def get_config(self):
        config = super().get_config()
        config.update(dtype=self.dtype, **self._settings())
        return config


@keras.saving.register_keras_serializable(package="embedder")
class BatchAllTripletLoss(_BatchLoss):
    """Keras loss for :func:`batch_all_triplet_loss` (y_true: labels, y_pred: embeddings)."""

    fn = staticmethod(batch_all_triplet_loss)
    default_name = "batch_all_triplet_loss"


@keras.saving.register_keras_serializable(package="embedder")
class BatchHardTripletLoss(_BatchLoss):
    """Keras loss for :func:`batch_hard_triplet_loss`; ``soft`` selects the soft margin.

    With ``soft=True`` the margin is not used (kept in the config, ignored).
    """

    fn = staticmethod(batch_hard_triplet_loss)
    default_name = "batch_hard_triplet_loss"

    def __init__(
        self,
        margin=0.2,
        distance="euclidean",
        soft=False,
        cross_replica=False,
        reduction="sum_over_batch_size",
        name=None,
        dtype=None,
    ):
        self.soft = check_flag(soft, "soft")
        super().__init__(margin, distance, cross_replica, reduction=reduction, name=name,
                         dtype=dtype)

    def _settings(self):
        return {**super()._settings(), "soft": self.soft}


@keras.saving.register_keras_serializable(package="embedder")
class SemiHardTripletLoss(_BatchLoss):
    """Keras loss for :func:`semi_hard_triplet_loss`."""

    fn = staticmethod(semi_hard_triplet_loss)
    default_name = "semi_hard_triplet_loss"


@keras.saving.register_keras_serializable(package="embedder")
class ContrastiveLoss(_BatchLoss):
    """Keras loss for :func:`contrastive_loss` (default margin 0.5)."""

    fn = staticmethod(contrastive_loss)
    default_name = "contrastive_loss"

    def __init__(self, margin=0.5, distance="euclidean", cross_replica=False, **kwargs):
        super().__init__(margin, distance, cross_replica, **kwargs)


@keras.saving.register_keras_serializable(package="embedder")
class OfflineTripletLoss(_BatchLoss):
    """Keras loss for :func:`triplet_loss` on stacked triplets; ``y_true`` is ignored.

    ``y_pred`` has shape (B, 3, D): the anchor, positive and negative embeddings of each
    triplet, as produced by one shared encoder applied to three inputs. ``call`` returns
    the per-triplet hinges, so the default reduction gives their mean.
    """

    default_name = "triplet_loss"

    def __init__(
        self, margin=0.2, distance="euclidean", reduction="sum_over_batch_size", name=None,
        dtype=None,
    ):
        # Per-triplet hinges need no mining, so there is nothing to gather across replicas.
        super().__init__(margin, distance, reduction=reduction, name=name, dtype=dtype)

    def _settings(self):
        return {"margin": self.margin, "distance": self.distance}

    def call(self, y_true, y_pred):
        shape = tuple(y_pred.shape)
        if len(shape) != 3 or shape[1] not in (3, None):
            raise ValueError(
                "y_pred must have shape (batch_size, 3, embedding_dim) holding stacked "
                f"(anchor, positive, negative) embeddings, got shape {shape}"
            )
        return triplet_hinges(y_pred[:, 0], y_pred[:, 1], y_pred[:, 2], self.margin, self.distance)



LOSSES = {
    "batch_all": BatchAllTripletLoss,
    "batch_hard": BatchHardTripletLoss,
    "semi_hard": SemiHardTripletLoss,
    "contrastive": ContrastiveLoss,
    "triplet": OfflineTripletLoss,
}


def _check_name(name):
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return name


def default_margin(name):
    """Default margin of the loss called ``name`` (0.5 for contrastive, else 0.2)."""
    return DEFAULT_MARGINS[_check_name(name)]


def get_loss(name, /, *, margin=None, distance="euclidean", **kwargs):
    """Build the Keras loss called ``name``.

    Parameters
    ----------
    name : {"batch_all", "batch_hard", "semi_hard", "contrastive", "triplet"}
        ``"triplet"`` gives :class:`OfflineTripletLoss`.
    margin : float, optional
        Defaults to :func:`default_margin`.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Distance between embeddings: euclidean (zero gradient at zero distance),
        squared euclidean, or 1 - cosine similarity.
    **kwargs
        Passed to the class (``soft`` for batch-hard, ``name``, ``reduction``, ``dtype``);
        ``name`` here is the Keras loss name, as the loss name is positional-only.
    """
    cls = LOSSES[_check_name(name)]
    margin = default_margin(name) if margin is None else margin
    return cls(margin=margin, distance=distance, **kwargs)
