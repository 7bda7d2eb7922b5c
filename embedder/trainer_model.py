"""The Keras model that trains an encoder with an in-batch loss.

:class:`InBatchTrainer` wraps an encoder; ``compile(optimizer=...)`` then
``fit(dataset of (images, labels))`` trains it. Each step forwards the P x K batch once,
computes **one** pairwise-distance matrix, and derives from it both the loss and the five
diagnostics of :mod:`embedder.training_metrics`, whose running means ``fit`` logs next to
``loss`` (``active_fraction``, ``pos_distance``, ``neg_distance``, ``norm_mean``,
``norm_std``).
"""

import keras
from keras import ops

from embedder.distances import check_distance
from embedder.losses import IN_BATCH, default_margin, in_batch_loss
from embedder.mining import batch_view, check_flag, check_margin
from embedder.training_metrics import DiagnosticsMean, batch_diagnostics


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
    loss : {"batch_all", "batch_hard", "semi_hard", "contrastive"}, default="batch_all"
        See :mod:`embedder.losses`.
    margin : float, optional
        Defaults to :func:`embedder.losses.default_margin` of ``loss``. Ignored by the
        loss (not by ``active_fraction``) when ``soft=True``.
    distance : {"euclidean", "squared", "cosine"}, default="euclidean"
        Distance between embeddings: euclidean (zero gradient at zero distance),
        squared euclidean, or 1 - cosine similarity.
    soft : bool, default=False
        Soft-margin batch-hard; only with ``loss="batch_hard"``.
    cross_replica : bool, default=False
        Under a ``tf.distribute`` strategy, mine over the batch all-gathered from every
        replica; the gradient then equals the single-device gradient on the global batch.
    name : str, default="in_batch_trainer"
        Name of the object in Keras.

    Examples
    --------
    >>> import keras, numpy as np
    >>> from embedder.trainer_model import InBatchTrainer
    >>> encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> trainer = InBatchTrainer(encoder, "batch_hard", margin=0.3)
    >>> trainer.compile(optimizer="sgd")
    >>> x, y = np.random.default_rng(0).normal(size=(8, 4)), np.repeat([0, 1], 4)
    >>> sorted(trainer.fit(x, y, batch_size=8, verbose=0).history)
    ['active_fraction', 'loss', 'neg_distance', 'norm_mean', 'norm_std', 'pos_distance']
    """

    def __init__(
        self,
        encoder,
        loss="batch_all",
        *,
        margin=None,
        distance="euclidean",
        soft=False,
        cross_replica=False,
        name="in_batch_trainer",
    ):
        if not isinstance(loss, str) or loss not in IN_BATCH:
            raise ValueError(f"loss must be one of {sorted(IN_BATCH)}, got {loss!r}")
        if check_flag(soft, "soft") and loss != "batch_hard":
            raise ValueError(f"soft=True applies to loss='batch_hard' only, got loss={loss!r}")
        super().__init__(name=name)
        self.encoder = encoder
        self.loss_name = loss
        self.margin = default_margin(loss) if margin is None else check_margin(margin)
        self.distance = check_distance(distance)
        self.soft = soft
        self.cross_replica = check_flag(cross_replica, "cross_replica")
        self.diagnostics = DiagnosticsMean()

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
        view = batch_view(y, embeddings, self.distance, self.cross_replica)
        # Batch-all over each anchor's positives only (data-dependent shapes) is ~2x less
        # work, but XLA compiles static shapes only.
        top_k = not self.jit_compile
        loss, terms = in_batch_loss(self.loss_name, view, self.margin, self.soft, top_k)
        self.diagnostics.update_state(batch_diagnostics(view, self.margin, terms, top_k))
        loss = _scale_for_replicas(loss)
        for extra in self.losses:
            loss = loss + self._aggregate_additional_loss(extra)
        return loss

    def get_config(self):
        return {
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "loss": self.loss_name, "margin": self.margin, "distance": self.distance,
            "soft": self.soft, "cross_replica": self.cross_replica, "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        return cls(encoder, config.pop("loss"), **config)
