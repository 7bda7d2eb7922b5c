"""One worker of the loopback multi-worker tests, or the one-process reference.

``python -m tests.embedder.training.multi_worker_job OUT.json --workers A,B --index I``
trains the tiny encoder with ``strategy="multi_worker"``; without ``--workers`` it trains
in one process (``train(None, ...)``, also called in-process by the tests). The chief
writes the result (history, first-step gradient, embeddings) as JSON.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: The run both sides train: 3 epochs of 3 steps, P x K = 4 x 4 (8 images per worker).
SETTINGS = {"loss": "batch_all", "epochs": 3, "classes_per_batch": 4, "samples_per_class": 4,
            "learning_rate": 0.01, "warmup_epochs": 0.5, "validation_fraction": 0.0,
            "cross_replica": True, "embedding_dim": 8, "random_state": 0}


def _epoch_printer(seconds):
    """A callback that prints each epoch and sleeps, so the kill test finds the run under way."""
    import keras

    class EpochPrinter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print(f"EPOCH {epoch} at {time.monotonic():.1f}", flush=True)
            time.sleep(seconds)

    return EpochPrinter()


def _data():
    from tests._images import make_shapes

    X, y = make_shapes(12, size=16, n_classes=4)
    return X.astype("float32"), y


def first_gradient(run):
    """The gradient of the first global batch's loss (summed over replicas), as lists."""
    import tensorflow as tf

    model, strategy = run.model, run.strategy

    def replica(x, y):
        if strategy is not None:
            with tf.device(strategy.extended.worker_devices[0]):
                y = tf.identity(y)
        with tf.GradientTape() as tape:
            loss = model.compute_loss(y=y, y_pred=model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        if strategy is None:
            return grads
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)

    if strategy is None:
        grads = replica(*next(iter(run.dataset)))
    else:
        from embedder.training.multi_worker import replica_batches

        size = run.config.classes_per_batch * run.config.samples_per_class
        batch = next(iter(replica_batches(strategy, run.dataset, size)))
        grads = tf.function(lambda b: strategy.run(replica, args=b))(batch)
        grads = [strategy.experimental_local_results(g)[0] for g in grads]
    return [tf.reshape(g, [-1]).numpy().tolist() for g in grads]


def train(strategy, checkpoint_dir=None, slow=0.0, gradient_path=None):
    """Train the tiny encoder; return history, first gradient and embeddings.

    The first step's gradient is computed before training (and written to
    ``gradient_path`` by the chief) unless the run resumes from ``checkpoint_dir``.
    """
    import keras

    from embedder.files import atomic_write_text
    from embedder.models.encoders import ENCODERS, build_encoder, register_encoder
    from embedder.training import TrainingConfig, build_training_run, run_training, seeded
    from embedder.training.multi_worker import is_chief
    from tests.conftest import _tiny_cnn

    if "tiny_cnn" not in ENCODERS:
        register_encoder("tiny_cnn")(_tiny_cnn)
    X, y = _data()
    settings = {k: v for k, v in SETTINGS.items() if k != "embedding_dim"}
    config = TrainingConfig(**settings, strategy=None if strategy is None else "multi_worker",
                            checkpoint_dir=checkpoint_dir).validate()
    with seeded(0):
        scope = strategy.scope() if strategy is not None else _null()
        with scope:
            encoder = build_encoder("tiny_cnn", input_shape=X.shape[1:],
                                    embedding_dim=SETTINGS["embedding_dim"])
        run = build_training_run(encoder, X, y, config, input_shape=X.shape[1:],
                                 strategy=strategy, callbacks=[_epoch_printer(slow)])
        gradient = None
        if gradient_path is not None or strategy is None:
            gradient = first_gradient(run)
        if gradient_path is not None and is_chief(strategy):
            atomic_write_text(gradient_path, json.dumps(gradient))
        history = run_training(run)
    embeddings = keras.ops.convert_to_numpy(encoder(X[:16], training=False))
    return {"history": history, "gradient": gradient, "embeddings": embeddings.tolist(),
            "iterations": int(run.model.optimizer.iterations.numpy())}


def _null():
    import contextlib

    return contextlib.nullcontext()


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--workers")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--gradient")
    parser.add_argument("--slow", type=float, default=0.0)
    args = parser.parse_args(argv)
    from embedder.training.multi_worker import is_chief, multi_worker_strategy, set_cluster

    print(f"STARTED at {time.monotonic():.1f}", flush=True)
    set_cluster(args.workers, args.index)
    strategy = multi_worker_strategy()  # first: before any TF op
    print(f"JOINED at {time.monotonic():.1f}", flush=True)
    start = time.perf_counter()
    result = train(strategy, args.checkpoint_dir, args.slow, args.gradient)
    result["seconds"] = time.perf_counter() - start
    if is_chief(strategy):
        from embedder.files import atomic_write_text

        atomic_write_text(args.out, json.dumps(result))
    print(f"DONE at {time.monotonic():.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
