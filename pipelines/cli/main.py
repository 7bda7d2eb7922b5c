"""The ``triplet`` command line: train, evaluate, predict, embed, search, demo.

DATA is a folder with one sub-folder per class, a CSV with ``path,label`` columns, or a
built-in data set name (``digits``, ``fashion-mnist``). User mistakes end with exit code 1
and one line ``triplet: error: ...`` on stderr; ``--verbose`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

from pipelines.cli import train as _cli_train  # noqa: E402
from pipelines.cli import use as _cli_use  # noqa: E402
from pipelines.cli.common import MAX_IMAGE_SIZE  # noqa: E402

_PACKAGES = ("embedder", "classifiers", "pipelines")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true",
                        help="show tracebacks of errors and TensorFlow's own messages")
    common.add_argument("--max-pixels", type=int, metavar="N", default=None,
                        help="refuse image files whose header declares more pixels "
                        "(default 67108864, 64 Mpx)")
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
    _add_train(sub, [common, training])
    _add_evaluate(sub, [common, training])
    _add_predict(sub, [common])
    _add_search(sub, [common])
    _add_embed(sub, [common])
    p = sub.add_parser("demo", parents=[common],
                       help="train on the bundled digits, compare the heads, save all")
    p.add_argument("--out", default="demo-output", metavar="DIR")
    return parser


def _add_train(sub, parents):
    p = sub.add_parser("train", parents=parents, help="train and save an encoder")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--out", required=True, metavar="ENCODER.keras")
    p.add_argument("--encoder", default=None, metavar="NAME|ENCODER.keras",
                   help="architecture (seed_cnn, small_cnn, mobilenet_v2, resnet50), or a "
                   "saved .keras encoder to fine-tune")


def _add_evaluate(sub, parents):
    p = sub.add_parser("evaluate", parents=parents,
                       help="cross-validated report of the heads + the best pipeline saved")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--encoder", default=None, metavar="ENCODER.keras|NAME",
                   help="a saved .keras encoder (frozen, not refitted) or an architecture "
                   "name trained inside every fold (default: the TripletEmbedder default)")
    p.add_argument("--heads", default="knn,logreg,svm", help="comma-separated head names")
    p.add_argument("--cv", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--n-jobs", type=int, default=None, metavar="N",
                   help="folds run in parallel through joblib (default: one after another)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="a running Dask scheduler (e.g. tcp://10.0.0.5:8786): the folds run "
                   "on its workers (needs the dask extra)")
    _add_scheduler_timeout(p)
    p.add_argument("--open-set", type=int, metavar="K", default=None,
                   help="instead of the closed-set report: an open-set report whose folds "
                   "each hide K whole classes from training (AUROC, FPR at 95%% TPR, "
                   "open-set accuracy) with the first of --heads")


def _add_predict(sub, parents):
    p = sub.add_parser("predict", parents=parents, help="predict classes of images")
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
    p.add_argument("--trust", action="store_true",
                   help="load a .joblib model without a verified sidecar (only for files "
                   "you made yourself: unpickling runs code)")


def _add_search(sub, parents):
    p = sub.add_parser("search", parents=parents,
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
    p.add_argument("--trust", action="store_true",
                   help="load a .joblib model without a verified sidecar (see predict)")


def _add_embed(sub, parents):
    p = sub.add_parser("embed", parents=parents, help="embed images with a saved encoder")
    p.add_argument("encoder", metavar="ENCODER.keras")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--out", required=True, metavar="embeddings.npy|.parquet|.csv")
    p.add_argument("--image-size", type=int, metavar="PX",
                   help="side of the square images files are decoded to (default 112)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N",
                   help="images embedded at a time (default 256); memory does not grow "
                   "with the number of images")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="a running Dask scheduler: shards of the images are embedded on its "
                   "workers (the encoder and image files must be readable there)")
    _add_scheduler_timeout(p)


def _add_scheduler_timeout(p):
    p.add_argument("--scheduler-timeout", type=float, metavar="SECONDS", default=30.0,
                   help="seconds to connect to --scheduler and get its first reply "
                   "(default 30)")


def _add_config_options(group) -> None:
    from embedder.training.config import field_choices


    """One option per training setting, generated from the config's fields and help."""
    for field in _cli_train.training_fields():
        flag = "--" + field.name.replace("_", "-")
        kind = str(field.type).split("|")[0].strip()
        text = field.metadata["help"]
        if field.default is not None:
            text += f" (default: {field.default})"
        if kind == "bool":
            group.add_argument(flag, action="store_const", const=True, default=None,
                               help=text)
            continue
        choices = [c for c in field_choices(field) or () if c is not None] or None
        if field.name == "strategy":  # accepted here so that the reason is told, not argparse's
            choices = [*choices, "multi_worker"]
        group.add_argument(flag, type={"int": int, "float": float}.get(kind, str),
                           choices=choices, metavar=field.metadata.get("metavar"), help=text)


def main(argv=None) -> int:
    """Run the ``triplet`` command line; returns the exit code."""
    args = _parser().parse_args(argv)
    command = {"train": _cli_train.train, "evaluate": _cli_train.evaluate,
               "demo": _cli_train.demo, "predict": _cli_use.predict,
               "search": _cli_use.search, "embed": _cli_use.embed}[args.command]
    with _remembered_interrupts() as interrupts:
        code = _run(command, args)
    if interrupts and code != 130:  # an interrupt some library code caught and dropped
        print("triplet: interrupted", file=sys.stderr)
        return 130
    return code


@contextlib.contextmanager
def _remembered_interrupts():
    """SIGINT raises KeyboardInterrupt as usual, and is remembered in the yielded list.

    Code that catches the KeyboardInterrupt (a ``__del__``, a callback run where
    exceptions are ignored) cannot then turn an interrupted run into exit 0.
    """
    got = []

    def handler(signum, frame):
        got.append(signum)
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: signals are not ours to handle
        yield got
        return
    try:
        yield got
    finally:
        signal.signal(signal.SIGINT, previous)


def _run(command, args) -> int:
    """Run ``command``; user errors become one line and exit 1, interrupts exit 130."""
    try:
        if not args.verbose:
            _import_tensorflow_quietly()
        _check_image_limits(args)
        _check_scheduler(args)
        _check_strategy(args)
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


def _check_scheduler(args):
    """Check --scheduler's address and that a scheduler answers, before any work."""
    if getattr(args, "scheduler", None) is None:
        return
    from pipelines.cluster import probe_scheduler

    probe_scheduler(args.scheduler, args.scheduler_timeout)


def _check_strategy(args):
    """--strategy multi_worker is refused with the reason, before any work."""
    if getattr(args, "strategy", None) == "multi_worker":
        from embedder.training.config import MULTI_WORKER_UNSUPPORTED

        reason = MULTI_WORKER_UNSUPPORTED.partition(": ")[2]
        raise ValueError(f"--strategy multi_worker is not supported: {reason}")


def _check_image_limits(args):
    """Check --image-size and apply --max-pixels before any file is read."""
    size = getattr(args, "image_size", None)
    if size is not None and not 8 <= size <= MAX_IMAGE_SIZE:
        raise ValueError(f"--image-size must be between 8 and {MAX_IMAGE_SIZE} pixels, "
                         f"got {size}")
    if args.max_pixels is None:
        return
    if args.max_pixels < 1:
        raise ValueError(f"--max-pixels must be at least 1, got {args.max_pixels}")
    from embedder.data.decoding import set_max_pixels

    set_max_pixels(args.max_pixels)


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
    ours = tuple(str(Path(__file__).parents[2] / pkg) for pkg in _PACKAGES)

    def show(message, category, filename, *args, **kwargs):
        if verbose or str(filename).startswith(ours):
            print(f"triplet: warning: {' '.join(str(message).split())}", file=sys.stderr)

    return show
