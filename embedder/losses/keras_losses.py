"""Keras ``Loss`` objects for the registered losses: one generic wrapper and thin named ones.

:class:`MetricLoss` wraps any in-batch loss of :data:`embedder.losses.LOSSES` by name, the
way Keras 3 wraps its own loss functions (``LossFunctionWrapper``); the named classes
(``BatchAllTripletLoss``, ...) only fix the name and spell out its settings. Each class is
registered as ``embedder>ClassName`` (the names in ``.keras`` files and configs) and is
called by Keras as ``loss(y_true=labels, y_pred=embeddings)``.

A batch loss is one number, so ``call`` returns it repeated once per sample: the default
``"sum_over_batch_size"`` reduction gives back exactly the batch loss, and Keras's
per-replica scaling under ``tf.distribute`` applies as for any built-in loss (a bare
scalar would skip it). Sample weights therefore scale the loss by their mean.
"""

import keras
from keras import ops

from embedder.distances import check_distance
from embedder.losses.functions import triplet_hinges
from embedder.losses.mining import check_flag, check_margin
from embedder.losses.registry import get_spec, loss_names, resolve_params


@keras.saving.register_keras_serializable(package="embedder")
class MetricLoss(keras.losses.Loss):
    """Keras loss for the registered in-batch loss ``loss`` (y_true: labels, y_pred: embeddings).

    Parameters
    ----------
    loss : str, default="batch_all"
        A name of :data:`embedder.losses.LOSSES` that mines inside a batch.
    margin : float, optional
        Defaults to the loss's registered margin.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Distance between embeddings: euclidean (zero gradient at zero distance),
        squared euclidean, or 1 - cosine similarity.
    cross_replica : bool, default=False
        Mine over the batch all-gathered from every replica (see
        :mod:`embedder.losses.functions`).
    reduction : str, default="sum_over_batch_size"
        Keras's reduction of per-sample values (a batch loss returns one value per
        batch).
    name : str, optional
        Name of the object in Keras (default: ``"<loss>_loss"``).
    dtype : str, optional
        Dtype of the result (losses compute in float32).
    **params
        The loss's own settings (e.g. ``soft`` for ``"batch_hard"``), see
        ``LOSSES[loss].params``.

    Examples
    --------
    >>> import numpy as np
    >>> from embedder.losses import MetricLoss
    >>> loss = MetricLoss("batch_hard", margin=0.3, soft=True)
    >>> sorted(loss.get_config())[:4]
    ['cross_replica', 'distance', 'dtype', 'loss']
    >>> labels = np.array([0, 0, 1, 1])
    >>> embeddings = np.eye(4, 2, dtype="float32")
    >>> float(loss(labels, embeddings)) > 0
    True
    """

    def __init__(self, loss="batch_all", *, margin=None, distance="euclidean",
                 cross_replica=False, reduction="sum_over_batch_size", name=None,
                 dtype=None, **params):
        spec = get_spec(loss)
        if not spec.in_batch:
            raise ValueError(f"MetricLoss wraps in-batch losses {list(loss_names(in_batch=True))}"
                             f", got {loss!r} (use get_loss({loss!r}))")
        if spec.has_proxies:
            raise ValueError(f"loss {loss!r} trains class proxies, which a Keras Loss cannot "
                             "hold: train it with TripletEmbedder or InBatchTrainer")
        super().__init__(name=name or f"{loss}_loss", reduction=reduction, dtype=dtype)
        self.loss = loss
        self.margin = spec.default_margin if margin is None else check_margin(margin)
        self.distance = check_distance(distance)
        self.cross_replica = check_flag(cross_replica, "cross_replica")
        self.params = resolve_params(loss, params)

    def call(self, y_true, y_pred):
        fn = get_spec(self.loss).function
        value = fn(y_true, y_pred, margin=self.margin, distance=self.distance,
                   cross_replica=self.cross_replica, **self.params)
        # Repeat per sample so that Keras's reductions return the batch loss unchanged.
        return ops.broadcast_to(value, ops.shape(y_pred)[:1])

    def get_config(self):
        config = super().get_config()
        config.update(loss=self.loss, margin=self.margin, distance=self.distance,
                      cross_replica=self.cross_replica, dtype=self.dtype, **self.params)
        return config


class _NamedLoss(MetricLoss):
    # The named classes fix ``loss``: their configs leave it out.
    loss_name = None

    def get_config(self):
        config = super().get_config()
        del config["loss"]
        return config


@keras.saving.register_keras_serializable(package="embedder")
class BatchAllTripletLoss(_NamedLoss):
    """Keras loss for :func:`~embedder.losses.batch_all_triplet_loss` (see :class:`MetricLoss`).

    Examples
    --------
    >>> from embedder.losses import BatchAllTripletLoss
    >>> BatchAllTripletLoss(margin=0.1).get_config()["margin"]
    0.1
    """

    loss_name = "batch_all"

    def __init__(self, margin=0.2, distance="euclidean", cross_replica=False,
                 reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(self.loss_name, margin=margin, distance=distance,
                         cross_replica=cross_replica, reduction=reduction,
                         name=name or "batch_all_triplet_loss", dtype=dtype)


@keras.saving.register_keras_serializable(package="embedder")
class BatchHardTripletLoss(_NamedLoss):
    """Keras loss for :func:`~embedder.losses.batch_hard_triplet_loss`; ``soft`` selects
    the soft margin (then the margin is kept in the config and ignored).

    Examples
    --------
    >>> from embedder.losses import BatchHardTripletLoss
    >>> BatchHardTripletLoss(soft=True).get_config()["soft"]
    True
    """

    loss_name = "batch_hard"

    def __init__(self, margin=0.2, distance="euclidean", soft=False, cross_replica=False,
                 reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(self.loss_name, margin=margin, distance=distance,
                         cross_replica=cross_replica, reduction=reduction,
                         name=name or "batch_hard_triplet_loss", dtype=dtype,
                         soft=check_flag(soft, "soft"))

    @property
    def soft(self):
        """Whether the soft margin is used."""
        return self.params["soft"]


@keras.saving.register_keras_serializable(package="embedder")
class SemiHardTripletLoss(_NamedLoss):
    """Keras loss for :func:`~embedder.losses.semi_hard_triplet_loss` (see :class:`MetricLoss`).

    Examples
    --------
    >>> from embedder.losses import SemiHardTripletLoss
    >>> SemiHardTripletLoss().name
    'semi_hard_triplet_loss'
    """

    loss_name = "semi_hard"

    def __init__(self, margin=0.2, distance="euclidean", cross_replica=False,
                 reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(self.loss_name, margin=margin, distance=distance,
                         cross_replica=cross_replica, reduction=reduction,
                         name=name or "semi_hard_triplet_loss", dtype=dtype)


@keras.saving.register_keras_serializable(package="embedder")
class ContrastiveLoss(_NamedLoss):
    """Keras loss for :func:`~embedder.losses.contrastive_loss` (default margin 0.5).

    Examples
    --------
    >>> from embedder.losses import ContrastiveLoss
    >>> ContrastiveLoss().margin
    0.5
    """

    loss_name = "contrastive"

    def __init__(self, margin=0.5, distance="euclidean", cross_replica=False,
                 reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(self.loss_name, margin=margin, distance=distance,
                         cross_replica=cross_replica, reduction=reduction,
                         name=name or "contrastive_loss", dtype=dtype)


@keras.saving.register_keras_serializable(package="embedder")
class OfflineTripletLoss(keras.losses.Loss):
    """Keras loss for :func:`~embedder.losses.triplet_loss` on stacked triplets.

    ``y_true`` is ignored; ``y_pred`` has shape (B, 3, D): the anchor, positive and
    negative embeddings of each triplet, as produced by one shared encoder applied to
    three inputs. ``call`` returns the per-triplet hinges, so the default reduction gives
    their mean. Per-triplet hinges need no mining: nothing is gathered across replicas.

    Parameters
    ----------
    margin : float, default=0.2
        Hinge margin between positive and negative distances.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Distance between embeddings.
    reduction : str, default="sum_over_batch_size"
        Keras's reduction of the per-triplet hinges.
    name : str, optional
        Name of the object in Keras.
    dtype : str, optional
        Dtype of the result.

    Examples
    --------
    >>> from embedder.losses import OfflineTripletLoss
    >>> OfflineTripletLoss(margin=0.3).get_config()["margin"]
    0.3
    """

    loss_name = "triplet"

    def __init__(self, margin=0.2, distance="euclidean", reduction="sum_over_batch_size",
                 name=None, dtype=None):
        super().__init__(name=name or "triplet_loss", reduction=reduction, dtype=dtype)
        self.margin = check_margin(margin)
        self.distance = check_distance(distance)

    def call(self, y_true, y_pred):
        shape = tuple(y_pred.shape)
        if len(shape) != 3 or shape[1] not in (3, None):
            raise ValueError(
                "y_pred must have shape (batch_size, 3, embedding_dim) holding stacked "
                f"(anchor, positive, negative) embeddings, got shape {shape}"
            )
        return triplet_hinges(y_pred[:, 0], y_pred[:, 1], y_pred[:, 2], self.margin,
                              self.distance)

    def get_config(self):
        config = super().get_config()
        config.update(margin=self.margin, distance=self.distance, dtype=self.dtype)
        return config


def _named_classes():
    return {cls.loss_name: cls for cls in (*_NamedLoss.__subclasses__(), OfflineTripletLoss)}


def get_loss(name, /, *, margin=None, distance="euclidean", **kwargs):
    """Build the Keras loss called ``name``.

    Parameters
    ----------
    name : str
        A name of :data:`embedder.losses.LOSSES`; a loss with a named class (e.g.
        ``"batch_all"`` -> :class:`BatchAllTripletLoss`, ``"triplet"`` ->
        :class:`OfflineTripletLoss`) gets it, any other in-batch loss a
        :class:`MetricLoss`.
    margin : float, optional
        Defaults to the loss's registered margin.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Distance between embeddings.
    **kwargs
        The loss's own settings (``soft`` for batch-hard) and ``name``, ``reduction``,
        ``dtype`` (``name`` here is the Keras loss name: the loss name is positional-only).

    Examples
    --------
    >>> from embedder.losses import get_loss
    >>> type(get_loss("semi_hard")).__name__
    'SemiHardTripletLoss'
    """
    spec = get_spec(name)
    margin = spec.default_margin if margin is None else margin
    cls = _named_classes().get(name)
    if cls is not None:
        return cls(margin=margin, distance=distance, **kwargs)
    return MetricLoss(name, margin=margin, distance=distance, **kwargs)
