"""The ``triplet`` command line: train, evaluate, predict, embed, search, demo.

DATA is a folder with one sub-folder per class, a CSV with ``path,label`` columns, or a
built-in data set name (``digits``, ``fashion-mnist``). User mistakes end with exit code 1
and one line ``triplet: error: ...`` on stderr; ``--verbose`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

import numpy as np  # noqa: E402

EMBEDDING_FORMATS = (".npy", ".csv", ".parquet")
# The demo recipe: small_cnn on the bundled 8x8 digits, fast on 2 CPU cores.
DEMO_RECIPE = {"encoder": "small_cnn", "embedding_dim": 32, "epochs": 20, "cv": 3}
_PACKAGES = ("embedder", "classifiers", "pipelines")
#: Training settings the CLI sets itself: --seed and the terminal's progress display.
_SET_BY_CLI = ("random_state", "verbose")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true",
                        help="show tracebacks of errors and TensorFlow's own messages")
    training = argparse.ArgumentParser(add_help=False)
    group = training.add_argument_group("encoder training")
    group.add_argument("--image-size", type=int, metavar="PX",
                       help="side of the square images files are decoded to (default 112)")
    group.add_argument("--embedding-dim", type=int, help="size of the embedding (default 128)")
    group.add_argument("--weights", metavar="FILE|imagenet",
                       help="initial weights: a local file, or imagenet for Keras "
                       "Applications backbones")
    _add_config_options(group)
    group.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    parser = argparse.ArgumentParser(
        prog="triplet", description="Triplet-loss image embeddings with scikit-learn heads.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("train", parents=[common, training], help="train and save an encoder")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--out", required=True, metavar="ENCODER.keras")
    p.add_argument("--encoder", default=None, metavar="NAME|ENCODER.keras",
                   help="architecture (seed_cnn, small_cnn, mobilenet_v2, resnet50), or a "
                   "saved .keras encoder to fine-tune")

    p = sub.add_parser("evaluate", parents=[common, training],
                       help="cross-validated report of the heads + the best pipeline saved")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--encoder", default=None, metavar="ENCODER.keras|NAME",
                   help="a saved .keras encoder (frozen, not refitted) or an architecture "
                   "name trained inside every fold (default: the TripletEmbedder default)")
    p.add_argument("--heads", default="knn,logreg,svm", help="comma-separated head names")
    p.add_argument("--cv", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--open-set", type=int, metavar="K", default=None,
                   help="instead of the closed-set report: an open-set report whose folds "
                   "each hide K whole classes from training (AUROC, FPR at 95%% TPR, "
                   "open-set accuracy) with the first of --heads")

    p = sub.add_parser("predict", parents=[common], help="predict classes of images")
    p.add_argument("model", metavar="MODEL.joblib")
    p.add_argument("images", nargs="+", metavar="IMAGES_OR_FOLDER")
    p.add_argument("--out", metavar="predictions.csv", help="CSV file (default: stdout)")
    p.add_argument("--reject-unknown", action="store_true",
                   help="answer 'unknown' for images far from every known class (adds an "
                   "open_set_score column); needs --calibration unless the model's head "
                   "is an OpenSetClassifier")
    p.add_argument("--target-tpr", type=float, default=None, metavar="RATE",
                   help="share of known-class images to accept (default: the head's own, "
                   "else 0.95)")
    p.add_argument("--calibration", metavar="DATA", default=None,
                   help="labelled images of the known classes (e.g. the training DATA) to "
                   "calibrate the rejection threshold on; the head is not refitted")

    p = sub.add_parser("search", parents=[common],
                       help="find the gallery images nearest to query images")
    p.add_argument("model", metavar="MODEL.joblib|ENCODER.keras")
    p.add_argument("gallery", metavar="GALLERY", help="labelled DATA to search in")
    p.add_argument("queries", nargs="+", metavar="QUERY",
                   help="image files, folders of images, or a labelled DATA (a folder of "
                   "class sub-folders or a CSV): labelled queries are compared with "
                   "their own label")
    p.add_argument("--top", type=int, default=5, metavar="K",
                   help="hits per query (default 5)")
    p.add_argument("--out", metavar="hits.csv", help="CSV file of the hits")
    p.add_argument("--sheet", metavar="hits.png",
                   help="contact sheet PNG (default: --out with .png, else none)")
    p.add_argument("--image-size", type=int, metavar="PX",
                   help="side of the square images files are decoded to, for a .keras "
                   "encoder (default 112)")

    p = sub.add_parser("embed", parents=[common], help="embed images with a saved encoder")
    p.add_argument("encoder", metavar="ENCODER.keras")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--out", required=True, metavar="embeddings.npy|.parquet|.csv")
    p.add_argument("--image-size", type=int, metavar="PX",
                   help="side of the square images files are decoded to (default 112)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N",
                   help="images embedded at a time (default 256); memory does not grow "
                   "with the number of images")

    p = sub.add_parser("demo", parents=[common],
                       help="train on the bundled digits, compare the heads, save all")
    p.add_argument("--out", default="demo-output", metavar="DIR")
    return parser


def _training_fields():
    """The :class:`TrainingConfig` fields that are ``TripletEmbedder`` parameters."""
    import dataclasses

    from embedder.config import TrainingConfig
    from embedder.estimator import TripletEmbedder

    params = TripletEmbedder().get_params(deep=False)
    return [f for f in dataclasses.fields(TrainingConfig)
            if f.name in params and f.name not in _SET_BY_CLI]


def _add_config_options(group) -> None:
    """One option per training setting, generated from the config's fields and help."""
    for field in _training_fields():
        flag = "--" + field.name.replace("_", "-")
        kind = str(field.type).split("|")[0].strip()
        text = field.metadata["help"]
        if field.default is not None:
            text += f" (default: {field.default})"
        if kind == "bool":
            group.add_argument(flag, action="store_const", const=True, default=None,
                               help=text)
            continue
        choices = [c for c in field.metadata.get("choices", ()) if c is not None] or None
        group.add_argument(flag, type={"int": int, "float": float}.get(kind, str),
                           choices=choices, metavar=field.metadata.get("metavar"), help=text)


def main(argv=None) -> int:
    """Run the ``triplet`` command line; returns the exit code."""
    args = _parser().parse_args(argv)
    command = {"train": _train, "evaluate": _evaluate, "predict": _predict,
               "embed": _embed, "search": _search, "demo": _demo}[args.command]
    try:
        if not args.verbose:
            _import_tensorflow_quietly()
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(args.verbose)
            return command(args) or 0
    except (ValueError, TypeError, OSError) as exc:
        if args.verbose:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"triplet: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("triplet: interrupted", file=sys.stderr)
        return 130


def _import_tensorflow_quietly():
    """Import TensorFlow with C++ stderr muted: its start-up log lines (oneDNN, CUDA
    probing) ignore ``TF_CPP_MIN_LOG_LEVEL`` and would bury the CLI's own output."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()  # probes CUDA now, while muted
    except ImportError:
        pass  # a head-only model needs no TensorFlow; commands that do will say so
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _warning_printer(verbose):
    """One line per warning; warnings of other libraries (Keras, TF) only with --verbose."""
    ours = tuple(str(Path(__file__).parents[1] / pkg) for pkg in _PACKAGES)

    def show(message, category, filename, *args, **kwargs):
        if verbose or str(filename).startswith(ours):
            print(f"triplet: warning: {' '.join(str(message).split())}", file=sys.stderr)

    return show


def _progress() -> int:
    # Keras progress bars on a terminal, one line per epoch in logs and pipes.
    return 1 if sys.stdout.isatty() else 2


def _load(data):
    from embedder.data import load_dataset

    X, y = load_dataset(data)
    print(f"DATA {data}: {len(y)} images, {len(np.unique(y))} classes", flush=True)
    return X, y


def _input_shape(args, X):
    # Arrays carry their own shape; files are decoded to --image-size (else the default).
    if getattr(args, "image_size", None) is None or np.asarray(X).ndim != 1:
        return None
    if args.image_size < 8:
        raise ValueError(f"--image-size must be at least 8 pixels, got {args.image_size}")
    return (args.image_size, args.image_size, 3)


def _trainable_embedder(args, X, encoder):
    from embedder import TripletEmbedder

    names = [f.name for f in _training_fields()] + ["embedding_dim", "weights"]
    params = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if encoder is not None:
        params["encoder"] = encoder
    return TripletEmbedder(input_shape=_input_shape(args, X), random_state=args.seed,
                           verbose=_progress(), **params)


def _validation_line(embedder) -> str:
    validation = getattr(embedder, "validation_", None) or {}
    if validation.get("used"):
        return f"{validation['n_images']} held-out images (early stopping on MAP@R)"
    return (f"skipped: {validation.get('reason')}; no early stopping, the last epoch "
            "was kept")


def _table(rows) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _last(history, key):
    values = history.get(key) or []
    return "n/a" if not values or values[-1] is None else f"{float(values[-1]):.4f}"


def _train(args):
    if Path(args.out).suffix != ".keras":
        raise ValueError(f"--out must be a .keras file, got {args.out!r}")
    X, y = _load(args.data)
    embedder = _trainable_embedder(args, X, args.encoder)
    start = time.perf_counter()
    embedder.fit(X, y)
    embedder.save_encoder(args.out)
    hist = embedder.history_
    print(_table([
        ("encoder", f"{embedder.encoder} -> {embedder.encoder_.output_shape[-1]}-d "
         "embeddings"),
        ("images", f"{len(y)} ({len(embedder.classes_)} classes)"),
        ("epochs run", len(hist.get("loss", []))),
        ("final loss", _last(hist, "loss")),
        ("final val P@1", _last(hist, "val_precision_at_1")),
        ("final val MAP@R", _last(hist, "val_map_at_r")),
        ("validation", _validation_line(embedder)),
        ("collapse detected", "YES - see the FAQ" if getattr(embedder, "collapsed_", False)
         else "no"),
        ("training time", f"{time.perf_counter() - start:.1f} s"),
        ("saved", args.out),
    ]))


def _evaluation_embedder(args, X):
    """A registered name trains inside every fold; an encoder file is used frozen."""
    from embedder import FrozenEmbedder
    from embedder.encoders import available_encoders

    if args.encoder is None or args.encoder in available_encoders():
        return _trainable_embedder(args, X, args.encoder), "per_fold"
    if not Path(args.encoder).is_file():
        raise ValueError(f"--encoder must be one of {available_encoders()} or an existing "
                         f".keras encoder file, got {args.encoder!r}")
    return FrozenEmbedder(args.encoder, input_shape=_input_shape(args, X)), "never"


def _evaluate(args):
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    if args.cv < 2:
        raise ValueError(f"--cv must be at least 2, got {args.cv}")
    X, y = _load(args.data)
    embedder, refit = _evaluation_embedder(args, X)
    if args.open_set is not None:
        return _open_set_evaluation(embedder, X, y, heads, args)
    _report_and_model(embedder, X, y, heads, args.cv, refit, args.seed, args.out)


def _open_set_evaluation(embedder, X, y, heads, args):
    """``evaluate --open-set K``: the open-set report of the first head, saved to --out."""
    from classifiers import make_head
    from pipelines.factory import make_triplet_pipeline
    from pipelines.open_set import open_set_report

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
                             random_state=args.seed)
    paths = report.save(args.out)
    print(_table([(_metric, f"{report.mean[key]:.4f} +- {report.std[key]:.4f}")
                  for _metric, key in (("AUROC", "auroc"), ("FPR at 95% TPR", "fpr_at_95_tpr"),
                                       ("open-set accuracy", "open_set_accuracy"))]
                 + [("report", paths["markdown"]),
                    ("total time", f"{time.perf_counter() - start:.1f} s")]))
    return 0


def _report_and_model(embedder, X, y, heads, cv, refit, seed, out):
    """Cross-validate, save the report, refit the best head's pipeline on all data."""
    from sklearn.base import clone

    from classifiers import make_head
    from pipelines.factory import make_triplet_pipeline
    from pipelines.persistence import save_pipeline
    from pipelines.report import cross_validate_report, report_progress

    if not heads:
        raise ValueError("--heads must name at least one head, e.g. knn,logreg,svm")
    start = time.perf_counter()
    pipeline = make_triplet_pipeline(embedder, make_head(heads[0]))
    print(f"cross-validating {', '.join(heads)} with {cv} folds "
          f"(refit_encoder={refit})", flush=True)
    with report_progress():
        report = cross_validate_report(pipeline, X, y, cv=cv, heads=heads,
                                       refit_encoder=refit, random_state=seed)
    paths = report.save(out)
    print(f"refitting the best pipeline ({report.best_head}) on all {len(y)} images",
          flush=True)
    final = clone(pipeline).set_params(head=make_head(report.best_head)).fit(X, y)
    model_path = str(Path(out) / "model.joblib")
    save_pipeline(final, model_path)
    print()
    print(report.summary())
    print(_table([("report", paths["markdown"]), ("model", model_path),
                  ("total time", f"{time.perf_counter() - start:.1f} s")]))
    return report


def _collect_images(items) -> list:
    from embedder.decoding import IMAGE_EXTENSIONS

    paths = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ValueError(f"folder {item!r} contains no image files "
                                 f"({', '.join(IMAGE_EXTENSIONS)})")
            paths += found
        elif p.is_file():
            paths.append(str(p))
        else:
            raise FileNotFoundError(f"image or folder {item!r} does not exist")
    return paths


def _predict(args):
    import pandas as pd

    from pipelines.persistence import load_pipeline

    if not Path(args.model).is_file():
        raise FileNotFoundError(f"model file {args.model!r} does not exist")
    pipeline = load_pipeline(args.model)
    paths = _collect_images(args.images)
    Z = pipeline[:-1].transform(np.asarray(paths, dtype=object))  # embed once
    head = pipeline[-1]
    if args.reject_unknown:
        head = _rejecting_head(args, pipeline)
    elif args.target_tpr is not None or args.calibration is not None:
        raise ValueError("--target-tpr and --calibration only apply with --reject-unknown")
    table = pd.DataFrame({"path": paths, "class": head.predict(Z)})
    if hasattr(head, "predict_proba"):
        table["probability"] = np.round(head.predict_proba(Z).max(axis=1), 4)
    if args.reject_unknown:
        table["open_set_score"] = np.round(head.score_samples(Z), 6)
        rejected = int((table["class"] == head.unknown_label).sum())
        print(f"open-set threshold {head.threshold_:.6f} ({head.open_set_score}, accepts "
              f"{head.target_tpr:g} of known images); {rejected} of {len(paths)} images "
              f"rejected as {head.unknown_label!r}", file=sys.stderr)
    if args.out:
        from embedder.files import atomic_write_text

        atomic_write_text(args.out, table.to_csv(index=False))
        print(f"{len(paths)} predictions written to {args.out}")
    else:
        table.to_csv(sys.stdout, index=False)


def _rejecting_head(args, pipeline):
    """The model's head as an OpenSetClassifier (calibrated on --calibration if given)."""
    from classifiers import OpenSetClassifier
    from pipelines.open_set import rejecting_head

    head = pipeline[-1]
    if args.calibration is None and not isinstance(head, OpenSetClassifier):
        raise ValueError(
            "--reject-unknown needs --calibration DATA (labelled images of the known "
            "classes) unless the model's head is an OpenSetClassifier; the head of "
            f"{args.model!r} is a {type(head).__name__}")
    if args.target_tpr is not None and not 0 < args.target_tpr <= 1:
        raise ValueError(f"--target-tpr must be in (0, 1], got {args.target_tpr}")
    calibration = None
    if args.calibration is not None:
        from embedder.data import load_dataset

        X_cal, y_cal = load_dataset(args.calibration)
        # stderr: the predictions may be going to stdout as CSV
        print(f"calibration DATA {args.calibration}: {len(y_cal)} images, "
              f"{len(np.unique(y_cal))} classes", file=sys.stderr, flush=True)
        calibration = (pipeline[:-1].transform(X_cal), y_cal)
    return rejecting_head(head, calibration, target_tpr=args.target_tpr)


def _search(args):
    from embedder.data import load_dataset
    from pipelines.search import run_search

    if args.top < 1:
        raise ValueError(f"--top must be at least 1, got {args.top}")
    X, y = _load(args.gallery)
    queries = _search_queries(args.queries, load_dataset)
    sheet = args.sheet or (str(Path(args.out).with_suffix(".png")) if args.out else None)
    hits = run_search(args.model, (X, y), queries, top=args.top, out=args.out, sheet=sheet,
                      input_shape=_input_shape(args, X))
    for query, rows in hits.groupby("query", sort=False):
        print(f"{query}" + (f" ({rows['query_label'].iloc[0]})"
                            if rows["query_label"].iloc[0] else ""))
        for hit in rows.itertuples():
            print(f"  {hit.rank}. {hit.gallery_label:<12} {hit.distance:.4f}  {hit.gallery}")
    print(_table([("hits", args.out or "not written (no --out)"),
                  ("contact sheet", sheet or "not written (no --out or --sheet)")]))


def _search_queries(items, load_dataset):
    """Query images and labels: one labelled DATA (class folders or CSV), else files."""
    if len(items) == 1:
        source = Path(items[0])
        labelled = source.suffix.lower() == ".csv" or (
            source.is_dir() and any(p.is_dir() for p in source.iterdir()))
        if labelled:
            X, y = load_dataset(str(source))
            return X, y
    return np.asarray(_collect_images(items), dtype=object), None


def _embed(args):
    from embedder.encoder_files import load_encoder_file
    from pipelines.streaming import iter_embeddings, write_embeddings

    out = Path(args.out)
    if out.suffix not in EMBEDDING_FORMATS:
        raise ValueError(f"--out must end with one of {', '.join(EMBEDDING_FORMATS)}, "
                         f"got {args.out!r}")
    if out.suffix == ".parquet":
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise ValueError("--out .parquet needs the pyarrow package (pip install "
                             "pyarrow); use --out embeddings.npy or embeddings.csv instead")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not Path(args.encoder).is_file():
        raise FileNotFoundError(f"encoder file {args.encoder!r} does not exist")
    X, y = _load(args.data)
    model = load_encoder_file(args.encoder)[0]
    shape = _embed_shape(args, X, int(model.input_shape[-1]))
    dim = int(model.output_shape[-1])
    columns = {} if out.suffix == ".npy" else {"label": y}
    if out.suffix != ".npy" and np.asarray(X).ndim == 1:
        columns = {"path": X, **columns}
    # streamed: memory stays flat in the number of images (pipelines/streaming.py)
    blocks = iter_embeddings(model, X, shape, batch_size=args.batch_size)
    write_embeddings(blocks, len(X), dim, out, columns=columns)
    print(f"{len(X)} embeddings of dimension {dim} written to {out}")


def _embed_shape(args, X, channels):
    """Shape images are brought to: --image-size for files (else 112), arrays' own size."""
    if np.asarray(X).ndim != 1:
        return (*np.asarray(X).shape[1:3], channels)
    size = 112 if args.image_size is None else args.image_size
    if size < 8:
        raise ValueError(f"--image-size must be at least 8 pixels, got {size}")
    return (size, size, channels)


def _demo(args):
    from embedder import TripletEmbedder

    X, y = _load("digits")
    embedder = TripletEmbedder(
        encoder=DEMO_RECIPE["encoder"], input_shape=X.shape[1:],
        embedding_dim=DEMO_RECIPE["embedding_dim"], epochs=DEMO_RECIPE["epochs"],
        random_state=0, verbose=_progress(),
    )
    _report_and_model(embedder, X, y, ["knn", "logreg", "svm"], DEMO_RECIPE["cv"],
                      "per_fold", 0, args.out)
