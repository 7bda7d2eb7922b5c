"""The Keras model that trains an encoder with an in-batch loss.

:class:`InBatchTrainer` wraps an encoder; ``compile(optimizer=...)`` then
``fit(dataset of (images, labels))`` trains it. Each step forwards the P x K batch once,
computes **one** pairwise-distance matrix, and derives from it both the loss and the five
diagnostics of :mod:`embedder.training.diagnostics`, whose running means ``fit`` logs next to
``loss`` (``active_fraction``, ``pos_distance``, ``neg_distance``, ``norm_mean``,
``norm_std``).

A loss with class proxies (``"proxy_anchor"``, ``"arcface"``) gets them as a trainable
weight of this model (``n_classes`` rows per its registered ``proxy_shape``), and
``memory_size > 0`` adds a :class:`~embedder.training.memory.CrossBatchMemory`: both are
state of the training model, never of the encoder that is saved.
"""

import keras
from keras import ops

from embedder.distances import check_distance
from embedder.losses import batch_view, get_spec, in_batch_loss, loss_names, resolve_params
from embedder.losses.mining import check_flag, check_margin
from embedder.training.diagnostics import DiagnosticsMean, batch_diagnostics
from embedder.training.memory import CrossBatchMemory


def _scale_for_replicas(loss):
    # Keras sums the replicas' gradients; its own losses divide by the replica count
    # (keras.losses.Loss does it in its reduction), and so must a compute_loss override.
    if keras.backend.backend() != "tensorflow":
        return loss
    import tensorflow as tf

    n_replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / float(n_replicas) if n_replicas > 1 else loss


@keras.saving.register_keras_serializable(package="embedder")
class InBatchTrainer(keras.Model):
    """Train ``encoder`` with an in-batch triplet or contrastive loss and log diagnostics.

    The trainer itself is never saved: save its ``encoder``.

    Parameters
    ----------
    encoder : keras.Model
        Maps a batch of images to embeddings (B, D); any float output dtype (the loss
        and the diagnostics compute in float32 under mixed precision).
    loss : str, default="batch_all"
        An in-batch loss of :data:`embedder.losses.LOSSES`.
    margin : float, optional
        Defaults to the loss's registered margin. Also the margin of
        ``active_fraction``.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Distance between embeddings: euclidean (zero gradient at zero distance),
        squared euclidean, or 1 - cosine similarity.
    loss_params : dict, optional
        The loss's own settings (e.g. ``{"soft": True}`` for batch-hard); missing ones
        take the registered defaults.
    cross_replica : bool, default=False
        Under a ``tf.distribute`` strategy, mine over the batch all-gathered from every
        replica; the gradient then equals the single-device gradient on the global batch.
    n_classes : int, optional
        Classes of the training labels (``0..n_classes-1``); needed by a loss with class
        proxies, which this model then holds as its ``proxies`` weight.
    memory_size : int, default=0
        Rows of the cross-batch memory (0: none): anchors are mined against the batch
        and the last ``memory_size`` embeddings of earlier steps (not with proxy losses).
    memory_warmup : int, default=0
        Training steps before the memory is used.
    name : str, default="in_batch_trainer"
        Name of the object in Keras.

    Examples
    --------
    >>> import keras, numpy as np
    >>> from embedder.training.trainer import InBatchTrainer
    >>> encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> trainer = InBatchTrainer(encoder, "batch_hard", margin=0.3)
    >>> trainer.compile(optimizer="sgd")
    >>> x, y = np.random.default_rng(0).normal(size=(8, 4)), np.repeat([0, 1], 4)
    >>> sorted(trainer.fit(x, y, batch_size=8, verbose=0).history)
    ['active_fraction', 'loss', 'neg_distance', 'norm_mean', 'norm_std', 'pos_distance']
    """

    def __init__(  # noqa: PLR0913 - a Keras model lists its settings
        self,
        encoder,
        loss="batch_all",
        *,
        margin=None,
        distance="euclidean",
        loss_params=None,
        cross_replica=False,
        n_classes=None,
        memory_size=0,
        memory_warmup=0,
        name="in_batch_trainer",
    ):
        spec = get_spec(loss)
        if not spec.in_batch:
            raise ValueError(f"loss must be an in-batch loss "
                             f"{list(loss_names(in_batch=True))}, got {loss!r}")
        super().__init__(name=name)
        self.encoder = encoder
        self.loss_name = loss
        self.margin = spec.default_margin if margin is None else check_margin(margin)
        self.distance = check_distance(distance)
        self.loss_params = resolve_params(loss, loss_params)
        self.cross_replica = check_flag(cross_replica, "cross_replica")
        self.diagnostics = DiagnosticsMean()
        self.n_classes = n_classes
        dim = int(encoder.output_shape[-1])
        self.proxies = self._make_proxies(spec, n_classes, dim)
        self.memory_size, self.memory_warmup = int(memory_size), int(memory_warmup)
        if self.memory_size and spec.has_proxies:
            raise ValueError(f"memory_size applies to pair losses, not to the proxy loss "
                             f"{loss!r}; got memory_size={memory_size!r}")
        self.memory = (CrossBatchMemory(self.memory_size, dim, self.memory_warmup)
                       if self.memory_size > 0 else None)

    def _make_proxies(self, spec, n_classes, dim):
        if not spec.has_proxies:
            return None
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes must be an int >= 1 for the proxy loss "
                             f"{spec.name!r}, got {n_classes!r}")
        shape = spec.proxy_shape(n_classes, dim, **self.loss_params)
        # Rows of norm ~1: Adam's steps then move the proxies as fast as the embeddings
        # (the papers raise the proxies' learning rate for the same reason).
        init = keras.initializers.RandomNormal(stddev=dim ** -0.5)
        return self.add_weight(shape=shape, initializer=init, name="proxies")

    def call(self, inputs, training=None):
        """Embeddings of ``inputs``: the encoder's output."""
        return self.encoder(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The batch loss (per-replica scaled) and the diagnostics, from one distance matrix.

        ``y`` holds the labels and ``y_pred`` the embeddings (cast to float32 first);
        ``x`` and ``sample_weight`` are not used (the loss describes the whole batch).
        Losses added by layers (regularisers) are included.
        """
        embeddings = ops.cast(y_pred, "float32")
        # Batch-all over each anchor's positives only (data-dependent shapes) is ~2x less
        # work, but XLA compiles static shapes only.
        view = batch_view(y, embeddings, self.distance, self.cross_replica,
                          top_k=not self.jit_compile)
        mined = view if self.memory is None else self.memory.extend(view, self.distance)
        loss, terms = in_batch_loss(self.loss_name, mined, self.margin, self.loss_params,
                                    self.proxies)
        margin = 0.0 if self.margin is None else self.margin  # margin-less: wrong order
        # The diagnostics describe the batch (over batch + memory they would cost O(B N^2)).
        reuse = terms.batch_all if self.memory is None else None
        self.diagnostics.update_state(batch_diagnostics(view, margin, reuse))
        if self.memory is not None and training:
            self.memory.enqueue(view.embeddings, view.labels)  # after the loss read it
        loss = _scale_for_replicas(loss)
        for extra in self.losses:
            loss = loss + self._aggregate_additional_loss(extra)
        return loss

    def get_config(self):
        return {
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "loss": self.loss_name, "margin": self.margin, "distance": self.distance,
            "loss_params": dict(self.loss_params), "cross_replica": self.cross_replica,
            "n_classes": self.n_classes, "memory_size": self.memory_size,
            "memory_warmup": self.memory_warmup, "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        return cls(encoder, config.pop("loss"), **config)
