"""Cross-batch memory (XBM, Wang et al. 2020, "Cross-Batch Memory for Embedding Learning").

A FIFO of the last ``size`` embeddings and labels seen in training, held as non-trainable
variables of the training model (never of the saved encoder, and saved with the model's
weights, so a run resumed from a checkpoint keeps its memory). Each step scores the
batch's anchors against the batch *and* the memory (the memory's rows are constants: the
gradient flows through the batch only), and only then enqueues the batch. The memory is
used once ``warmup`` steps have run, because the first embeddings drift too fast to serve
as candidates (the paper's warm-up).

Under a ``tf.distribute`` strategy with several replicas the batch of every replica is
all-gathered before it is enqueued, and the variables take the first replica's update
(``aggregation="only_first_replica"``): every replica's memory holds the same global rows.
"""

import keras
from keras import ops

from embedder.losses.mining import replica_context, with_memory


class CrossBatchMemory(keras.layers.Layer):
    """The FIFO memory bank of :class:`embedder.training.InBatchTrainer`.

    Parameters
    ----------
    size : int
        Rows the memory holds (>= 1).
    dim : int
        Embedding size.
    warmup : int, default=0
        Training steps before the memory is used (it is filled from the first step).
    name : str, default="cross_batch_memory"
        Name of the object in Keras.
    """

    def __init__(self, size, dim, warmup=0, name="cross_batch_memory"):
        super().__init__(name=name, dtype="float32")
        self.size, self.dim, self.warmup = int(size), int(dim), int(warmup)

        def state(shape, dtype, name):
            return self.add_weight(shape=shape, dtype=dtype, initializer="zeros",
                                   trainable=False, name=name,
                                   aggregation="only_first_replica")

        self.embeddings = state((self.size, self.dim), "float32", "embeddings")
        self.labels = state((self.size,), "int32", "labels")
        # filled rows, next row to write, training steps seen
        self.counters = state((3,), "int32", "counters")
        self.built = True

    def valid(self):
        """(size,) boolean: the rows that hold an embedding, all False during warm-up."""
        filled, _, steps = self.counters[0], self.counters[1], self.counters[2]
        return ops.logical_and(ops.arange(self.size) < filled, steps >= self.warmup)

    def extend(self, view, distance):
        """``view`` with the memory's valid rows appended to its candidates."""
        return with_memory(view, self.embeddings, self.labels, self.valid(), distance)

    def enqueue(self, embeddings, labels):
        """Write the (global) batch over the oldest rows and count one step."""
        context = replica_context()
        embeddings = ops.stop_gradient(ops.cast(embeddings, "float32"))
        labels = ops.cast(labels, "int32")
        if context is not None:
            embeddings = context.all_gather(embeddings, axis=0)
            labels = context.all_gather(labels, axis=0)
        n = ops.shape(labels)[0]
        kept = ops.minimum(n, self.size)
        rows = ops.arange(kept) + (n - kept)  # a batch larger than the memory: its last rows
        filled, position, steps = self.counters[0], self.counters[1], self.counters[2]
        index = ((position + ops.arange(kept)) % self.size)[:, None]
        self.embeddings.assign(ops.scatter_update(self.embeddings, index,
                                                  ops.take(embeddings, rows, axis=0)))
        self.labels.assign(ops.scatter_update(self.labels, index, ops.take(labels, rows)))
        self.counters.assign(ops.stack([ops.minimum(filled + kept, self.size),
                                        (position + kept) % self.size, steps + 1]))

    def get_config(self):
        return {"size": self.size, "dim": self.dim, "warmup": self.warmup, "name": self.name}
