"""The ``triplet train``, ``evaluate`` and ``demo`` commands."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import numpy as np

from pipelines.cli.common import input_shape, load, progress, table
from pipelines.text import last_value

# The demo recipe: small_cnn on the bundled 8x8 digits, fast on 2 CPU cores.
DEMO_RECIPE = {"encoder": "small_cnn", "embedding_dim": 32, "epochs": 20, "cv": 3}
#: Training settings the CLI sets itself: --seed and the terminal's progress display.
SET_BY_CLI = ("random_state", "verbose")


def _final(history, key) -> str:
    value = last_value(history, key)
    return "n/a" if value is None else f"{value:.4f}"


def training_fields():
    """The :class:`TrainingConfig` fields that are ``TripletEmbedder`` parameters."""
    import dataclasses

    from embedder.estimator import TripletEmbedder
    from embedder.training.config import TrainingConfig

    params = TripletEmbedder().get_params(deep=False)
    return [f for f in dataclasses.fields(TrainingConfig)
            if f.name in params and f.name not in SET_BY_CLI]


def log_callbacks(args, *, per_run):
    """Keras callbacks of ``--tensorboard`` and ``--csv-log``; ``per_run``: one numbered
    sub-folder / file per training run (the folds of ``evaluate`` train copies)."""
    import keras

    from embedder.training.user_callbacks import RunLogger

    callbacks = []
    if getattr(args, "tensorboard", None) is not None:
        callbacks.append(RunLogger("tensorboard", args.tensorboard) if per_run
                         else keras.callbacks.TensorBoard(args.tensorboard))
    if getattr(args, "csv_log", None) is not None:
        if Path(args.csv_log).is_dir():
            raise ValueError(f"--csv-log must be a file, got the folder {args.csv_log!r}")
        Path(args.csv_log).parent.mkdir(parents=True, exist_ok=True)
        callbacks.append(RunLogger("csv", args.csv_log) if per_run
                         else keras.callbacks.CSVLogger(args.csv_log))
    return callbacks or None


def _trainable_embedder(args, X, encoder, *, per_run=False):
    from embedder import TripletEmbedder

    names = [f.name for f in training_fields()] + ["embedding_dim", "weights"]
    params = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if encoder is not None:
        params["encoder"] = encoder
    return TripletEmbedder(input_shape=input_shape(args, X), random_state=args.seed,
                           verbose=progress(), callbacks=log_callbacks(args, per_run=per_run),
                           **params)


def _fine_tuning_line(config) -> str:
    frozen = config.freeze_backbone_epochs
    if not frozen:
        return "none: all layers trained from the first epoch"
    line = f"backbone frozen for {frozen} epoch{'s' * (frozen > 1)} (head only)"
    if frozen < config.epochs:
        factor = config.fine_tune_learning_rate_factor
        line += f", then all but its BatchNorm at {factor:g} x the learning rate"
    return line


def _validation_line(embedder) -> str:
    validation = getattr(embedder, "validation_", None) or {}
    if validation.get("used"):
        return (f"{validation['n_images']} held-out images (early stopping on a MAP@R "
                "plateau)")
    return (f"skipped: {validation.get('reason')}; no early stopping, the last epoch "
            "was kept")


def _join_cluster(args) -> bool:
    """Create the multi-worker strategy first (before any TensorFlow op); chief or not."""
    if getattr(args, "strategy", None) != "multi_worker":
        if getattr(args, "workers", None):
            raise ValueError(f"--workers needs --strategy multi_worker, got --strategy "
                             f"{getattr(args, 'strategy', None)}")
        return True
    from embedder.training.multi_worker import is_chief, multi_worker_strategy, set_cluster

    if args.workers:
        set_cluster(args.workers, args.worker_index)
    return is_chief(multi_worker_strategy())


def train(args):
    if Path(args.out).suffix != ".keras":
        raise ValueError(f"--out must be a .keras file, got {args.out!r}")
    chief = _join_cluster(args)
    X, y = load(args.data)
    embedder = _trainable_embedder(args, X, args.encoder)
    start = time.perf_counter()
    embedder.fit(X, y)
    if chief:  # the other workers of a multi-worker run hold the same encoder
        embedder.save_encoder(args.out)
    hist = embedder.history_
    print(table([
        ("encoder", f"{embedder.encoder} -> {embedder.encoder_.output_shape[-1]}-d "
         "embeddings"),
        ("images", f"{len(y)} ({len(embedder.classes_)} classes)"),
        ("epochs run", len(hist.get("loss", []))),
        ("fine-tuning", _fine_tuning_line(embedder.config_)),
        ("final loss", _final(hist, "loss")),
        ("final val P@1", _final(hist, "val_precision_at_1")),
        ("final val MAP@R", _final(hist, "val_map_at_r")),
        ("validation", _validation_line(embedder)),
        ("stopped", f"{embedder.stop_reason_}; kept epoch {embedder.epoch_kept_} of "
         f"{embedder.epochs_run_}"),
        ("collapse detected", "YES - see the FAQ" if getattr(embedder, "collapsed_", False)
         else "no"),
        ("training time", f"{time.perf_counter() - start:.1f} s"),
        ("saved", args.out if chief else "nothing (not the chief)"),
    ]))


def _evaluation_embedder(args, X):
    """A registered name trains inside every fold; an encoder file is used frozen."""
    from embedder import FrozenEmbedder
    from embedder.models.encoders import available_encoders

    if args.encoder is None or args.encoder in available_encoders():
        return _trainable_embedder(args, X, args.encoder, per_run=True), "per_fold"
    if args.tensorboard is not None or args.csv_log is not None:
        raise ValueError(f"--tensorboard and --csv-log log training, but --encoder "
                         f"{args.encoder!r} is a saved encoder used frozen (nothing trains)")
    if not Path(args.encoder).is_file():
        raise ValueError(f"--encoder must be one of {available_encoders()} or an existing "
                         f".keras encoder file, got {args.encoder!r}")
    return FrozenEmbedder(args.encoder, input_shape=input_shape(args, X)), "never"


def evaluate(args):
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    if args.cv < 2:
        raise ValueError(f"--cv must be at least 2, got {args.cv}")
    if args.n_jobs is not None and args.n_jobs == 0:
        raise ValueError("--n-jobs must be a positive number of processes or -1 (all "
                         "cores), got 0")
    _check_out_folder(args.out)
    X, y = load(args.data)
    embedder, refit = _evaluation_embedder(args, X)
    folds_X = X
    if refit == "per_fold" and args.scheduler is None:
        folds_X = _decoded_once(X, embedder.input_shape)
    with _fold_backend(args.scheduler, args.scheduler_timeout):
        if args.open_set is not None:
            return _open_set_evaluation(embedder, folds_X, y, heads, args)
        _report_and_model(embedder, folds_X, y, refit, _Plan(heads, args.cv, args.seed,
                                                             args.out, args.n_jobs),
                          refit_X=X)


def _decoded_once(X, shape=None):
    """Image files decoded once for every fold, which would each decode them again; left
    as paths when they do not fit in memory. Workers of a Dask cluster read the files
    themselves (--scheduler), so they get paths."""
    from embedder.base import PATHS_DEFAULT_SHAPE
    from embedder.data.image_pipeline import decoded_in_memory

    shape = tuple(shape or PATHS_DEFAULT_SHAPE)  # what the embedder decodes paths to
    start = time.perf_counter()
    decoded = decoded_in_memory(X, shape)
    if decoded is not X and isinstance(decoded, np.ndarray):  # not arrays, not kept paths
        print(f"decoded {len(decoded)} images to {shape[0]} x {shape[1]} x {shape[2]} once "
              f"for every fold ({time.perf_counter() - start:.1f} s)", flush=True)
    return decoded


def _check_out_folder(out):
    """--out must be a folder that can be made: checked before the cross-validation."""
    for part in (Path(out), *Path(out).absolute().parents):
        if part.exists() and not part.is_dir():
            raise ValueError(f"--out must be a folder (the report and model go there), but "
                             f"{str(part)!r} is a file")
        if part.exists():
            return


@contextlib.contextmanager
def _fold_backend(address, timeout):
    """Run the folds on the Dask cluster at ``address`` (joblib's dask backend)."""
    if address is None:
        yield
        return
    import joblib

    from pipelines.cluster import scheduler_client

    with scheduler_client(address, timeout) as client, joblib.parallel_config(backend="dask"):
        print(f"folds run on the Dask cluster at {address} "
              f"({len(client.scheduler_info()['workers'])} workers)", flush=True)
        yield


def _open_set_evaluation(embedder, X, y, heads, args):
    """``evaluate --open-set K``: the open-set report of the first head, saved to --out."""
    from classifiers import make_head
    from pipelines.factory import make_triplet_pipeline
    from pipelines.report.open_set import open_set_report

    if not heads:
        raise ValueError("--heads must name at least one head, e.g. knn,logreg,svm")
    n_classes = len(np.unique(y))
    if not 1 <= args.open_set <= n_classes - 2:
        raise ValueError(f"--open-set must be from 1 to {n_classes - 2} (the {n_classes} "
                         f"classes minus 2 that stay known), got {args.open_set}")
    start = time.perf_counter()
    print(f"open-set evaluation: {args.cv} folds, each hiding {args.open_set} classes, "
          f"head {heads[0]}", flush=True)
    report = open_set_report(make_triplet_pipeline(embedder, make_head(heads[0])), X, y,
                             unknown_classes=args.open_set, cv=args.cv,
                             random_state=args.seed, n_jobs=args.n_jobs)
    paths = report.save(args.out)
    print(table([(_metric, f"{report.mean[key]:.4f} +- {report.std[key]:.4f}")
                  for _metric, key in (("AUROC", "auroc"), ("FPR at 95% TPR", "fpr_at_95_tpr"),
                                       ("open-set accuracy", "open_set_accuracy"))]
                 + [("report", paths["markdown"]),
                    ("total time", f"{time.perf_counter() - start:.1f} s")]))
    return 0


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What a cross-validated evaluation runs and where it writes."""

    heads: list
    cv: int
    seed: int
    out: str
    n_jobs: int | None = None


def _report_and_model(embedder, X, y, refit, plan, *, refit_X=None):
    """Cross-validate, save the report, refit the best head's pipeline on all data.

    ``refit_X`` (default ``X``) is what the saved model is fitted on: the files when the
    folds got them decoded, so the model records the files' fingerprints and one path
    column as its input, as a model fitted on the folder does.
    """
    from sklearn.base import clone

    from classifiers import make_head
    from pipelines.factory import make_triplet_pipeline
    from pipelines.persistence.pipeline_files import save_pipeline
    from pipelines.report.cross_validation import (
        cross_validate_report,
        refit_plan,
        report_progress,
    )

    if not plan.heads:
        raise ValueError("--heads must name at least one head, e.g. knn,logreg,svm")
    start = time.perf_counter()
    pipeline = make_triplet_pipeline(embedder, make_head(plan.heads[0]))
    print(f"cross-validating {', '.join(plan.heads)} with {plan.cv} folds "
          f"(refit_encoder={refit})", flush=True)
    with report_progress():
        report = cross_validate_report(pipeline, X, y, cv=plan.cv, heads=plan.heads,
                                       refit_encoder=refit, random_state=plan.seed,
                                       n_jobs=plan.n_jobs)
    refit_with = refit_plan(report) if refit == "per_fold" else None
    if refit_with is not None:
        report.notes.append(refit_with["note"])
    paths = report.save(plan.out)
    final = clone(pipeline).set_params(head=make_head(report.best_head))
    what = f"refitting the best pipeline ({report.best_head}) on all {len(y)} images"
    if refit_with is not None:
        final.set_params(**{f"embed__{k}": v for k, v in refit_with["params"].items()})
        what += f" for {refit_with['epochs']} epochs (the folds' choice, no validation split)"
    print(what, flush=True)
    final.fit(X if refit_X is None else refit_X, y)
    model_path = str(Path(plan.out) / "model.joblib")
    save_pipeline(final, model_path)
    print()
    print(report.summary())
    print(table([("report", paths["markdown"]), ("model", model_path),
                 ("total time", f"{time.perf_counter() - start:.1f} s")]))
    return report


def demo(args):
    from embedder import TripletEmbedder

    X, y = load("digits")
    embedder = TripletEmbedder(
        encoder=DEMO_RECIPE["encoder"], input_shape=X.shape[1:],
        embedding_dim=DEMO_RECIPE["embedding_dim"], epochs=DEMO_RECIPE["epochs"],
        random_state=0, verbose=progress(),
    )
    _report_and_model(embedder, X, y, "per_fold",
                      _Plan(["knn", "logreg", "svm"], DEMO_RECIPE["cv"], 0, args.out))
