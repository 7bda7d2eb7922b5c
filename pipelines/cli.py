"""The ``triplet`` command line: train, evaluate, predict, embed, demo.

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
_TRAINING_OPTIONS = ("loss", "margin", "embedding_dim", "epochs", "learning_rate",
                     "samples_per_class", "validation_fraction")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true",
                        help="show tracebacks of errors and TensorFlow's own messages")
    training = argparse.ArgumentParser(add_help=False)
    group = training.add_argument_group("encoder training")
    group.add_argument("--loss", help="batch_all, batch_hard, semi_hard, contrastive or "
                       "triplet (default: the TripletEmbedder's recipe)")
    group.add_argument("--epochs", type=int)
    group.add_argument("--image-size", type=int, metavar="PX",
                       help="side of the square images files are decoded to (default 112)")
    group.add_argument("--embedding-dim", type=int)
    group.add_argument("--margin", type=float)
    group.add_argument("--learning-rate", type=float)
    group.add_argument("--samples-per-class", type=int, metavar="K")
    group.add_argument("--validation-fraction", type=float)
    group.add_argument("--augment", action="store_true", help="random flips/shifts")
    group.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    parser = argparse.ArgumentParser(
        prog="triplet", description="Triplet-loss image embeddings with scikit-learn heads.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("train", parents=[common, training], help="train and save an encoder")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--out", required=True, metavar="ENCODER.keras")
    p.add_argument("--encoder", default=None, metavar="NAME",
                   help="architecture: seed_cnn, small_cnn, mobilenet_v2, resnet50")

    p = sub.add_parser("evaluate", parents=[common, training],
                       help="cross-validated report of the heads + the best pipeline saved")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--encoder", default=None, metavar="ENCODER.keras|NAME",
                   help="a saved .keras encoder (frozen, not refitted) or an architecture "
                   "name trained inside every fold (default: the TripletEmbedder default)")
    p.add_argument("--heads", default="knn,logreg,svm", help="comma-separated head names")
    p.add_argument("--cv", type=int, default=5, help="number of folds (default 5)")

    p = sub.add_parser("predict", parents=[common], help="predict classes of images")
    p.add_argument("model", metavar="MODEL.joblib")
    p.add_argument("images", nargs="+", metavar="IMAGES_OR_FOLDER")
    p.add_argument("--out", metavar="predictions.csv", help="CSV file (default: stdout)")

    p = sub.add_parser("embed", parents=[common], help="embed images with a saved encoder")
    p.add_argument("encoder", metavar="ENCODER.keras")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--out", required=True, metavar="embeddings.npy|.parquet|.csv")
    p.add_argument("--image-size", type=int, metavar="PX")

    p = sub.add_parser("demo", parents=[common],
                       help="train on the bundled digits, compare the heads, save all")
    p.add_argument("--out", default="demo-output", metavar="DIR")
    return parser


def main(argv=None) -> int:
    """Run the ``triplet`` command line; returns the exit code."""
    args = _parser().parse_args(argv)
    command = {"train": _train, "evaluate": _evaluate, "predict": _predict,
               "embed": _embed, "demo": _demo}[args.command]
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

    params = {k: getattr(args, k) for k in _TRAINING_OPTIONS if getattr(args, k) is not None}
    if encoder is not None:
        params["encoder"] = encoder
    return TripletEmbedder(input_shape=_input_shape(args, X), augment=args.augment,
                           random_state=args.seed, verbose=_progress(), **params)


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
        ("encoder", f"{embedder.encoder} -> {embedder.embedding_dim}-d embeddings"),
        ("images", f"{len(y)} ({len(embedder.classes_)} classes)"),
        ("epochs run", len(hist.get("loss", []))),
        ("final loss", _last(hist, "loss")),
        ("final val P@1", _last(hist, "val_precision_at_1")),
        ("final val MAP@R", _last(hist, "val_map_at_r")),
        ("collapse detected", "YES - see the FAQ" if getattr(embedder, "collapsed_", False)
         else "no"),
        ("training time", f"{time.perf_counter() - start:.1f} s"),
        ("saved", args.out),
    ]))


def _is_encoder_file(value) -> bool:
    return value is not None and (str(value).endswith(".keras") or Path(value).is_file())


def _evaluate(args):
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    if args.cv < 2:
        raise ValueError(f"--cv must be at least 2, got {args.cv}")
    X, y = _load(args.data)
    if _is_encoder_file(args.encoder):
        from embedder import TripletEmbedder

        if not Path(args.encoder).is_file():
            raise FileNotFoundError(f"--encoder file {args.encoder!r} does not exist")
        embedder = TripletEmbedder(encoder=args.encoder, input_shape=_input_shape(args, X))
        refit = "never"
    else:
        embedder, refit = _trainable_embedder(args, X, args.encoder), "per_fold"
    _report_and_model(embedder, X, y, heads, args.cv, refit, args.seed, args.out)


def _report_and_model(embedder, X, y, heads, cv, refit, seed, out):
    """Cross-validate, save the report, refit the best head's pipeline on all data."""
    from sklearn.base import clone

    from classifiers import make_head
    from pipelines.factory import make_triplet_pipeline
    from pipelines.persistence import save_pipeline
    from pipelines.report import cross_validate_report

    if not heads:
        raise ValueError("--heads must name at least one head, e.g. knn,logreg,svm")
    start = time.perf_counter()
    pipeline = make_triplet_pipeline(embedder, make_head(heads[0]))
    print(f"cross-validating {', '.join(heads)} with {cv} folds "
          f"(refit_encoder={refit})", flush=True)
    report = cross_validate_report(pipeline, X, y, cv=cv, heads=heads, refit_encoder=refit,
                                   random_state=seed, verbose=1)
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
    from embedder.data import IMAGE_EXTENSIONS

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
    table = pd.DataFrame({"path": paths, "class": head.predict(Z)})
    if hasattr(head, "predict_proba"):
        table["probability"] = np.round(head.predict_proba(Z).max(axis=1), 4)
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"{len(paths)} predictions written to {args.out}")
    else:
        table.to_csv(sys.stdout, index=False)


def _embed(args):
    import pandas as pd

    from embedder import TripletEmbedder

    out = Path(args.out)
    if out.suffix not in EMBEDDING_FORMATS:
        raise ValueError(f"--out must end with one of {', '.join(EMBEDDING_FORMATS)}, "
                         f"got {args.out!r}")
    if out.suffix == ".parquet":
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise ValueError("--out .parquet needs the pyarrow package (pip install "
                             "pyarrow); use --out embeddings.npy or embeddings.csv instead")
    if not Path(args.encoder).is_file():
        raise FileNotFoundError(f"encoder file {args.encoder!r} does not exist")
    X, y = _load(args.data)
    embedder = TripletEmbedder(encoder=args.encoder, input_shape=_input_shape(args, X))
    Z = embedder.fit(X, y).transform(X)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, Z)
    else:
        table = pd.DataFrame(Z, columns=[f"e{i}" for i in range(Z.shape[1])])
        table.insert(0, "label", y)
        if np.asarray(X).ndim == 1:
            table.insert(0, "path", X)
        table.to_csv(out, index=False) if out.suffix == ".csv" else table.to_parquet(out)
    print(f"{Z.shape[0]} embeddings of dimension {Z.shape[1]} written to {out}")


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
