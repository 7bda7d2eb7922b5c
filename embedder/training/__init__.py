"""Stage-one training: the settings, the trainer model, the run and what watches it.

- :mod:`~embedder.training.config`: :class:`TrainingConfig`, the one source of every
  setting (help, rule, choices);
- :mod:`~embedder.training.trainer`: :class:`InBatchTrainer`, one forward pass and one
  distance matrix per P x K batch;
- :mod:`~embedder.training.diagnostics`: the five per-batch diagnostics;
- :mod:`~embedder.training.run`: :func:`build_training_run`, :func:`run_training`,
  :func:`train_encoder`, strategies and precision;
- :mod:`~embedder.training.multi_worker`: one run over several machines (our own loop
  under ``MultiWorkerMirroredStrategy``);
- :mod:`~embedder.training.fine_tuning`: the pretrained-start recipe (phases);
- :mod:`~embedder.training.callbacks`: validation retrieval, stopping rules, collapse detection,
  history;
- :mod:`~embedder.training.user_callbacks`: the user's Keras callbacks (checks, copies
  for ``clone`` and pickles, :class:`RunLogger`);
- :mod:`~embedder.training.checkpoints`: resumable backups and their manifest;
- :mod:`~embedder.training.seeding`: :func:`seeded`, reproducible runs.

May import :mod:`embedder.losses`, :mod:`embedder.data`, :mod:`embedder.models` and the
top-level helpers; never the estimators.
"""

from embedder.training.callbacks import (
    CollapseDetector,
    ConvergenceStop,
    HistoryRecorder,
    PlateauStop,
    RetrievalValidation,
    ScheduleLogger,
)
from embedder.training.checkpoints import claim_checkpoint_dir, resume_epoch
from embedder.training.config import Check, TrainingConfig, field_choices, seed_from
from embedder.training.diagnostics import DIAGNOSTICS, DiagnosticsMean, batch_diagnostics
from embedder.training.multi_worker import (
    WorkerLost,
    cluster_spec,
    is_chief,
    multi_worker_strategy,
    replica_batches,
    set_cluster,
    train_multi_worker,
    worker_config,
)
from embedder.training.run import (
    TrainingRun,
    build_training_run,
    dtype_policy,
    learning_rate_schedule,
    make_strategy,
    run_training,
    split_validation,
    stop_summary,
    strategy_scope,
    train_encoder,
)
from embedder.training.seeding import seeded
from embedder.training.trainer import InBatchTrainer
from embedder.training.user_callbacks import (
    RunLogger,
    check_callbacks,
    portable_callback,
    portable_callbacks,
)

__all__ = [
    "Check", "CollapseDetector", "ConvergenceStop", "DIAGNOSTICS", "DiagnosticsMean",
    "HistoryRecorder", "InBatchTrainer", "PlateauStop", "RetrievalValidation", "RunLogger",
    "ScheduleLogger", "TrainingConfig", "TrainingRun", "WorkerLost", "batch_diagnostics",
    "build_training_run", "check_callbacks", "claim_checkpoint_dir", "cluster_spec",
    "dtype_policy", "field_choices", "is_chief", "learning_rate_schedule", "make_strategy",
    "multi_worker_strategy", "portable_callback", "portable_callbacks", "replica_batches",
    "resume_epoch", "run_training", "seed_from", "seeded", "set_cluster", "split_validation",
    "stop_summary", "strategy_scope", "train_encoder", "train_multi_worker", "worker_config",
]
