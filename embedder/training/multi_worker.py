"""One training run across machines: ``strategy="multi_worker"``.

Keras 3's ``model.fit`` fails under ``tf.distribute.MultiWorkerMirroredStrategy``
(keras-team/keras#20585: ``fit`` builds the model from a ``PerReplica`` batch and reduces
its scalar logs per replica); the strategy itself works. This module therefore runs its
own loop: every worker draws the same P x K global batches from the run's sampler and
keeps its own slice (:func:`replica_batches`), ``strategy.run`` computes each replica's
loss with :meth:`InBatchTrainer.compute_loss <embedder.training.trainer.InBatchTrainer>`
(the registry's loss and the diagnostics, mined across workers with ``cross_replica``),
and the run's Keras optimizer and learning-rate schedule apply the gradients, summed
over the replicas. The run's callbacks see one ``fit``: history, collapse detection,
validation retrieval with early stopping and best weights (computed on the chief and
broadcast, so every worker takes the same decisions). Frozen-backbone phases and
``loss="triplet"`` are not supported here.

The cluster comes from ``TF_CONFIG`` (``{"cluster": {"worker": [...]}, "task": {"type":
"worker", "index": i}}``), set by :func:`set_cluster` or by the user; worker 0 is the
chief. Only the chief writes the checkpoints into ``checkpoint_dir``; the others write
theirs into a temporary folder that is removed at the end. A restarted cluster resumes at
the chief's last checkpoint (``checkpoint_dir`` must then be readable by every worker: a
shared folder, or a copy). A worker that dies makes the others stop within the
coordination service's heartbeat timeout (seconds) with a :class:`WorkerLost` error.

The strategy must exist before TensorFlow runs its first operation (it configures the
process's collectives): call :func:`multi_worker_strategy` at the start of the program.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import keras
import numpy as np

from embedder.checks import summary
from embedder.training.callbacks import RetrievalValidation, ScheduleLogger

#: Subfolder of ``checkpoint_dir`` holding the multi-worker loop's state.
STATE_DIR = "multi_worker"
#: Seconds a worker waits for the whole cluster to come up before the process is ended.
STARTUP_TIMEOUT = 300


class WorkerLost(RuntimeError):
    """A peer of a multi-worker run stopped answering; restart every worker to resume."""


def cluster_spec(workers, worker_index) -> dict:
    """The ``TF_CONFIG`` mapping of ``workers`` (``"host:port"`` strings), as ``worker_index``.

    Parameters
    ----------
    workers : str or sequence of str
        Every worker's address, the chief (worker 0) first; a string is split at commas.
    worker_index : int
        This process's position in ``workers``.

    Returns
    -------
    dict
    """
    if isinstance(workers, str):
        workers = [w.strip() for w in workers.split(",") if w.strip()]
    workers = list(workers)
    bad = [w for w in workers if not isinstance(w, str) or w.rpartition(":")[2] == w
           or not w.rpartition(":")[2].isdigit()]
    if len(workers) < 2 or bad:
        raise ValueError(f"workers must be at least two 'host:port' addresses, got "
                         f"{workers!r}")
    if (isinstance(worker_index, bool) or not isinstance(worker_index, int)
            or not 0 <= worker_index < len(workers)):
        raise ValueError(f"worker_index must be an int in 0..{len(workers) - 1}, got "
                         f"{worker_index!r}")
    return {"cluster": {"worker": workers}, "task": {"type": "worker", "index": worker_index}}


def set_cluster(workers, worker_index) -> None:
    """Write :func:`cluster_spec` to the ``TF_CONFIG`` environment variable."""
    os.environ["TF_CONFIG"] = json.dumps(cluster_spec(workers, worker_index))


@functools.cache
def multi_worker_strategy():
    """The process's ``MultiWorkerMirroredStrategy`` over the ``TF_CONFIG`` cluster.

    One per process (its collectives are the process's), created at the first call: make
    that call before TensorFlow runs anything. A worker whose peers do not all join
    within ``STARTUP_TIMEOUT`` seconds is ended by ``SIGALRM``: TensorFlow would wait
    forever, holding the interpreter and ignoring SIGTERM. A peer lost later is noticed
    by the coordination service's heartbeats (seconds).

    Returns
    -------
    tf.distribute.MultiWorkerMirroredStrategy
    """
    import tensorflow as tf

    spec = os.environ.get("TF_CONFIG")
    if not spec:
        raise ValueError("strategy='multi_worker' needs the TF_CONFIG environment variable "
                         "(or --workers/--worker-index), got none")
    previous = signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(STARTUP_TIMEOUT)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def is_chief(strategy) -> bool:
    """Whether this process writes the run's files (worker 0; True without a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver is None or not resolver.task_id


def worker_config(config, strategy):
    """``config`` for this worker: a non-chief's ``checkpoint_dir`` is a temporary copy.

    The copy holds the chief's files when its folder is readable here (one machine, a
    shared folder), so every worker resumes from the same checkpoint. The caller removes
    it (:func:`train_multi_worker` does).
    """
    if is_chief(strategy) or config.checkpoint_dir is None:
        return config
    own = Path(tempfile.mkdtemp(prefix="embedder-worker-"))
    chief = Path(config.checkpoint_dir)
    if chief.is_dir():
        # not the chief's temporaries (".name.tmp"), which it may be renaming right now
        shutil.copytree(chief, own, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
    return config.replace(checkpoint_dir=str(own))


def replica_batches(strategy, dataset, global_batch):
    """Distribute ``(images, labels)`` global batches: replica r gets the r-th slice.

    Every worker reads the same global batches (the sampler is seeded) and keeps the
    slices of its own replicas, so the run sees exactly the batches of one process.
    """
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ValueError(f"the batch (classes_per_batch x samples_per_class = "
                         f"{global_batch}) must split evenly over {replicas} replicas")
    size = global_batch // replicas

    def per_worker(context):
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local * size

        def split(images, labels):
            images = images[first:first + local * size]
            labels = labels[first:first + local * size]
            return tf.data.Dataset.from_tensor_slices((
                tf.reshape(images, (local, size, *images.shape[1:])),
                tf.reshape(labels, (local, size))))

        return dataset.flat_map(split)

    return strategy.distribute_datasets_from_function(per_worker)


def _step_function(model, strategy):
    import tensorflow as tf

    optimizer = model.optimizer
    device = strategy.extended.worker_devices[0]

    def replica_step(images, labels):
        # A dataset tensor has no device inside the step, and all_gather (cross_replica)
        # then fails with "destinations can not be empty": place it on this worker.
        with tf.device(device):
            labels = tf.identity(labels)
        with tf.GradientTape() as tape:
            embeddings = model(images, training=True)
            loss = model.compute_loss(y=labels, y_pred=embeddings)
        variables = model.trainable_variables
        # the Keras optimizer sums the replicas' gradients; compute_loss scaled the loss
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    @tf.function
    def step(batch):
        losses = strategy.run(replica_step, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    return step


def _broadcast(strategy, values):
    """The chief's float ``values`` on every worker (an all-reduce of the chief's copy)."""
    import tensorflow as tf

    chief = is_chief(strategy)

    @tf.function
    def share(vector):
        def replica(vector):
            context = tf.distribute.get_replica_context()
            first = tf.equal(context.replica_id_in_sync_group, 0)
            return context.all_reduce(tf.distribute.ReduceOp.SUM,
                                      tf.where(first, vector, tf.zeros_like(vector)))

        return strategy.experimental_local_results(strategy.run(replica, args=(vector,)))[0]

    vector = np.asarray(values if chief else np.zeros(len(values)), dtype="float64")
    return share(tf.constant(vector)).numpy()


def _agree(strategy, logs):
    """Replace ``logs`` by the chief's (same keys on every worker)."""
    keys = sorted(logs)
    shared = _broadcast(strategy, [float(logs[k]) for k in keys])
    logs.update(zip(keys, (float(v) for v in shared), strict=True))
    return logs


def _save_state(model, folder, epoch) -> None:
    """Weights and optimizer state of ``epoch``; ``state.json`` names the file to resume.

    The previous file is removed only once ``state.json`` names the new one, so a worker
    killed while saving leaves a whole checkpoint.
    """
    from embedder.files import atomic_path, atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    arrays.update({f"o{i}": keras.ops.convert_to_numpy(v)
                   for i, v in enumerate(model.optimizer.variables)})
    name = f"state-{int(epoch)}.npz"
    with atomic_path(folder / name) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    atomic_write_text(folder / "state.json", json.dumps({"epoch": int(epoch), "file": name}))
    for old in folder.glob("state-*.npz"):
        if old.name != name:
            old.unlink(missing_ok=True)


def _restore_state(model, folder) -> int:
    """The epoch to start at: 0, or the one after the last saved epoch (state restored)."""
    if folder is None or not (folder / "state.json").is_file():
        return 0
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    with np.load(folder / state["file"]) as saved:
        n_weights = len(model.get_weights())
        model.set_weights([saved[f"w{i}"] for i in range(n_weights)])
        for i, variable in enumerate(model.optimizer.variables):
            variable.assign(saved[f"o{i}"])
    return int(state["epoch"])


def _start_epoch(strategy, model, folder) -> int:
    """Restore the checkpoint; check that every worker found the chief's epoch."""
    epoch = _restore_state(model, folder)
    chief_epoch = int(_broadcast(strategy, [epoch])[0])
    if chief_epoch != epoch:
        raise ValueError(f"checkpoint_dir of the chief resumes at epoch {chief_epoch}, this "
                         f"worker found epoch {epoch}: the folder must be readable by every "
                         "worker (a shared folder or a copy)")
    return epoch


def _check_run(run) -> None:
    if run.sampler is None:
        raise ValueError(f"strategy='multi_worker' needs an in-batch loss, got "
                         f"loss={run.config.loss!r}")
    if len(run.phases) > 1:
        raise ValueError(f"strategy='multi_worker' trains in one phase, got "
                         f"freeze_backbone_epochs={run.config.freeze_backbone_epochs}; "
                         "set freeze_backbone_epochs=0")


def _lost_errors():
    import tensorflow as tf

    return (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.AbortedError, tf.errors.CancelledError)


def _epoch_logs(model, step, batches, steps):
    model.diagnostics.reset_state()
    total = 0.0
    for _ in range(steps):
        total += float(step(next(batches)))
    logs = {"loss": total / steps}
    logs.update({k: float(v) for k, v in model.diagnostics.result().items()})
    return logs


def _epochs(run, start, step, batches, callbacks):
    """Train the epochs from ``start``; the chief's validation logs decide for all."""
    model, config = run.model, run.config
    # the logs' writers run first; the chief's logs then reach every worker's deciders
    first = [c for c in callbacks if isinstance(c, ScheduleLogger | RetrievalValidation)]
    rest = [c for c in callbacks if c not in first]
    folder = None if config.checkpoint_dir is None else Path(config.checkpoint_dir) / STATE_DIR
    for epoch in range(start, config.epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        logs = _epoch_logs(model, step, batches, run.steps_per_epoch)
        for callback in first:
            callback.on_epoch_end(epoch, logs)
        _agree(run.strategy, logs)
        for callback in rest:
            callback.on_epoch_end(epoch, logs)
        if folder is not None:
            _save_state(model, folder, epoch + 1)
        if model.stop_training:
            break


def train_multi_worker(run):
    """Run ``run`` (a :class:`~embedder.training.TrainingRun`) on its multi-worker strategy.

    Parameters
    ----------
    run : TrainingRun
        Built by :func:`~embedder.training.build_training_run` with the strategy of
        :func:`multi_worker_strategy` and the config of :func:`worker_config`.

    Returns
    -------
    dict of str -> list of float
        The per-epoch history, as :func:`~embedder.training.run_training` returns it.

    Raises
    ------
    WorkerLost
        When a peer stops answering (killed, unreachable, timed out).
    """
    from embedder.training.callbacks import HistoryRecorder

    _check_run(run)
    model, strategy = run.model, run.strategy
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    callbacks = [ScheduleLogger()] + list(run.callbacks)
    for callback in callbacks:
        callback.set_model(model)
    folder = None
    try:
        folder = (None if run.config.checkpoint_dir is None
                  else Path(run.config.checkpoint_dir) / STATE_DIR)
        start = _start_epoch(strategy, model, folder)
        run.sampler.set_epoch(start)
        batch = run.config.classes_per_batch * run.config.samples_per_class
        batches = iter(replica_batches(strategy, run.dataset, batch))
        model.stop_training = False
        for callback in callbacks:
            callback.on_train_begin()
        _epochs(run, start, _step_function(model, strategy), batches, callbacks)
        for callback in callbacks:
            callback.on_train_end()
    except _lost_errors() as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        reason = summary(f"{type(exc).__name__}: {first_line}", 150)
        raise WorkerLost(f"multi-worker training lost a worker ({reason}); restart every "
                         "worker with the same checkpoint_dir to resume from the chief's "
                         "last checkpoint") from exc
    finally:
        if not is_chief(strategy) and run.config.checkpoint_dir is not None:
            shutil.rmtree(run.config.checkpoint_dir, ignore_errors=True)
    if folder is not None and is_chief(strategy):
        shutil.rmtree(folder, ignore_errors=True)  # finished: a new run starts afresh
    recorder = next(c for c in run.callbacks if isinstance(c, HistoryRecorder))
    return recorder.history
