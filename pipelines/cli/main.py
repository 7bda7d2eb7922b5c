"""The ``triplet`` command line: train, evaluate, predict, embed, search, demo.

DATA is a folder with one sub-folder per class, a CSV with ``path,label`` columns, or a
built-in data set name (``digits``, ``fashion-mnist``). User mistakes, bad files and the
machine's limits (memory, disk) end with exit code 1 and one line ``triplet: error: ...``
of at most 300 characters on stderr, naming the option or file; another library's error
(TensorFlow, pickle, zip) is summarised there. ``--verbose`` shows the traceback instead.
Programming errors keep their traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

from embedder.checks import MESSAGE_LIMIT, summary  # noqa: E402
from pipelines.cli import export as _cli_export  # noqa: E402
from pipelines.cli import train as _cli_train  # noqa: E402
from pipelines.cli import use as _cli_use  # noqa: E402
from pipelines.cli.common import check_options  # noqa: E402

_PACKAGES = ("embedder", "classifiers", "pipelines")
#: Start of the one line of a user error on stderr.
ERROR_PREFIX = "triplet: error: "
# command -> the options whose smaller values need less memory
_SMALLER = {"embed": "--batch-size or --image-size",
            "train": "--image-size, --classes-per-batch or --samples-per-class",
            "evaluate": "--image-size, --classes-per-batch or --samples-per-class"}


# Sub-command -> the example shown at the end of its --help.
EXAMPLES = {
    "train": "triplet train my_images/ --out encoder.keras --epochs 20 --image-size 64",
    "evaluate": "triplet evaluate my_images/ --out report/ --heads knn,logreg --cv 5\n"
                "  (writes report/report.html, report.md, report.json, the figures and "
                "model.joblib)",
    "predict": "triplet predict report/model.joblib new_images/ --out predictions.csv "
               "--all-probabilities",
    "search": "triplet search report/model.joblib my_images/ query.png --top 5 "
              "--out hits.csv",
    "embed": "triplet embed encoder.keras my_images/ --out embeddings.parquet",
    "demo": "triplet demo --out demo-output",
    "export": "triplet export encoder.keras --format onnx --out encoder.onnx",
}
_DATA_HELP = ("labelled images: a folder with one sub-folder of images per class, a CSV "
              "with path,label columns, or a built-in data set (digits, fashion-mnist)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("triplet-embeddings")
    except PackageNotFoundError:
        from embedder import __version__

        return f"{__version__} (not installed)"


def _command(sub, name, parents, text):
    """A sub-command whose --help ends with its example from :data:`EXAMPLES`."""
    example = EXAMPLES.get(name)
    return sub.add_parser(name, parents=parents, help=text, description=text,
                          epilog=f"example:\n  {example}" if example else None,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


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
    group.add_argument("--tensorboard", metavar="DIR", default=None,
                       help="TensorBoard logs of the training (evaluate: one sub-folder "
                       "run-N per training run, the folds then the refit)")
    group.add_argument("--csv-log", metavar="FILE", default=None,
                       help="per-epoch metrics as CSV (evaluate: FILE's name + -run-N per "
                       "training run)")

    parser = argparse.ArgumentParser(
        prog="triplet", description="Triplet-loss image embeddings with scikit-learn heads.",
        epilog="example:\n  triplet evaluate my_images/ --out report/\n"
        "Run `triplet COMMAND --help` for the options and an example of each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub, [common, training])
    _add_evaluate(sub, [common, training])
    _add_predict(sub, [common])
    _add_search(sub, [common])
    _add_embed(sub, [common])
    _add_export(sub, [common])
    p = _command(sub, "demo", [common],
                 "train on the bundled digits, compare the heads, save all")
    p.add_argument("--out", default="demo-output", metavar="DIR",
                   help="folder for the report and the model (default demo-output)")
    return parser


def _add_train(sub, parents):
    p = _command(sub, "train", parents, "train and save an encoder")
    p.add_argument("data", metavar="DATA", help=_DATA_HELP)
    p.add_argument("--out", required=True, metavar="ENCODER.keras",
                   help="where to save the trained encoder (a .keras file)")
    p.add_argument("--encoder", default=None, metavar="NAME|ENCODER.keras",
                   help="architecture (seed_cnn, small_cnn, small_resnet, mobilenet_v2, "
                   "resnet50), or a saved .keras encoder to fine-tune")
    p.add_argument("--workers", metavar="HOST:PORT,...", default=None,
                   help="with --strategy multi_worker: every worker's address, the chief "
                   "first (default: the TF_CONFIG environment variable)")
    p.add_argument("--worker-index", type=int, default=0, metavar="N",
                   help="this worker's position in --workers (0: the chief, which saves)")


def _add_evaluate(sub, parents):
    p = _command(sub, "evaluate", parents,
                 "cross-validated report of the heads + the best pipeline saved")
    p.add_argument("data", metavar="DATA", help=_DATA_HELP)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for report.html, report.md, report.json, the figures and "
                   "model.joblib (created if missing)")
    p.add_argument("--encoder", default=None, metavar="ENCODER.keras|NAME",
                   help="a saved .keras encoder (frozen, not refitted) or an architecture "
                   "name trained inside every fold (default: the TripletEmbedder default)")
    p.add_argument("--heads", default="knn,logreg,svm",
                   help="comma-separated head names from knn, logreg, svm (default "
                   "knn,logreg,svm)")
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
    p = _command(sub, "predict", parents, "predict classes of images")
    p.add_argument("model", metavar="MODEL.joblib",
                   help="a pipeline saved by `triplet evaluate` (its model.joblib)")
    p.add_argument("images", nargs="+", metavar="IMAGES_OR_FOLDER",
                   help="image files and/or folders (searched recursively)")
    p.add_argument("--out", metavar="predictions.csv|.json|.parquet",
                   help="write the predictions here, in the format of the suffix (default: "
                   "CSV on stdout)")
    p.add_argument("--all-probabilities", action="store_true",
                   help="add one probability_<class> column per class (the head must have "
                   "predict_proba)")
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
    p = _command(sub, "search", parents, "find the gallery images nearest to query images")
    p.add_argument("model", metavar="MODEL.joblib|ENCODER.keras",
                   help="a pipeline saved by `triplet evaluate` or a .keras encoder")
    p.add_argument("gallery", metavar="GALLERY", help="labelled DATA to search in: "
                   + _DATA_HELP)
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
    p = _command(sub, "embed", parents, "embed images with a saved encoder")
    p.add_argument("encoder", metavar="ENCODER.keras",
                   help="an encoder saved by `triplet train` (or save_encoder)")
    p.add_argument("data", metavar="DATA", help=_DATA_HELP)
    p.add_argument("--out", required=True, metavar="embeddings.npy|.parquet|.csv",
                   help="where to write the embeddings; .csv and .parquet add the path and "
                   "label columns")
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


def _add_export(sub, parents):
    p = _command(sub, "export", parents,
                 "export an encoder for serving without Keras: a TensorFlow SavedModel "
                 "folder, a TFLite file or an ONNX file (needs the export extra), checked "
                 "against the Keras encoder on sample images before it is saved")
    p.add_argument("encoder", metavar="ENCODER.keras", help="a saved encoder")
    p.add_argument("--format", choices=_cli_export.FORMATS, default="savedmodel",
                   help="savedmodel (a folder), tflite or onnx (default savedmodel)")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="the SavedModel folder, or the .tflite / .onnx file")
    p.add_argument("--atol", type=float, default=1e-4, metavar="TOL",
                   help="largest accepted difference from the Keras encoder (default 1e-4)")


def _augment_choice(text):
    """``--augment``'s value: a preset name, or true/false (Keras layers are Python-only)."""
    from embedder.data.augmentation import AUGMENTATIONS

    flags = {"true": True, "false": False}
    if text.lower() in flags:
        return flags[text.lower()]
    if text not in AUGMENTATIONS:
        raise argparse.ArgumentTypeError(
            f"expected one of {[*AUGMENTATIONS, 'true', 'false']}, got {text!r}")
    return text


def _add_config_options(group) -> None:
    """One option per training setting, generated from the config's fields and help."""
    from embedder.training.config import field_choices

    for field in _cli_train.training_fields():
        flag = "--" + field.name.replace("_", "-")
        kind = str(field.type).split("|")[0].strip()
        text = field.metadata["help"]
        if field.default is not None:
            text += f" (default: {field.default})"
        check = field.metadata.get("check")
        if check is not None and check.kind == "augment":
            group.add_argument(flag, nargs="?", const=True, default=None,
                               type=_augment_choice, metavar="PRESET",
                               help=text + "; here photo, digits, true or false, and "
                               "--augment alone is true (put it after DATA)")
            continue
        if kind == "bool":
            group.add_argument(flag, action="store_const", const=True, default=None,
                               help=text)
            continue
        choices = [c for c in field_choices(field) or () if c is not None] or None
        group.add_argument(flag, type={"int": int, "float": float}.get(kind, str),
                           choices=choices, metavar=field.metadata.get("metavar"), help=text)


def main(argv=None) -> int:
    """Run the ``triplet`` command line; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--verbose" not in argv:
        _import_tensorflow_quietly()  # the parser reads the settings: keep --help clean
    args = _parser().parse_args(argv)
    command = {"train": _cli_train.train, "evaluate": _cli_train.evaluate,
               "demo": _cli_train.demo, "predict": _cli_use.predict,
               "search": _cli_use.search, "embed": _cli_use.embed,
               "export": _cli_export.export}[args.command]
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
        check_options(args)  # before any model or data is loaded
        with _pixel_budget(args.max_pixels):
            _check_scheduler(args)
            with warnings.catch_warnings():
                warnings.showwarning = _warning_printer(args.verbose)
                return command(args) or 0
    except (ValueError, TypeError, OSError) as exc:
        return _error(exc, args)
    # evaluated when raised: TensorFlow's errors only once something imported it
    except _foreign_errors() as exc:
        return _error(exc, args)
    except KeyboardInterrupt:
        print("triplet: interrupted", file=sys.stderr)
        return 130


def _foreign_errors() -> tuple:
    """Errors of other libraries and of the machine that bad files or too little memory
    cause; programming errors (AttributeError, NameError, ...) keep their traceback."""
    import pickle
    import zipfile

    kinds = [MemoryError, EOFError, ImportError, zipfile.BadZipFile, pickle.UnpicklingError]
    errors = getattr(sys.modules.get("tensorflow"), "errors", None)
    if errors is not None:
        kinds.append(errors.OpError)  # ResourceExhaustedError, InvalidArgumentError, ...
    return tuple(kinds)


def _error(exc, args) -> int:
    """Print ``exc`` as one ``triplet: error:`` line (exit 1); --verbose re-raises it."""
    if args.verbose:
        raise exc
    message = _message(exc, args.command)
    print(ERROR_PREFIX + summary(message, MESSAGE_LIMIT - len(ERROR_PREFIX),
                                 hint="; --verbose shows all"), file=sys.stderr)
    return 1


def _message(exc, command) -> str:
    """Our own errors' text; another library's error prefixed with its type, and memory
    running out said so, with the options that use less."""
    if isinstance(exc, (ValueError, TypeError, OSError, ImportError)):
        return str(exc) or type(exc).__name__
    # TensorFlow's op errors start with the graph node ("{{function_node ...}} ")
    text = re.sub(r"\{\{.*?\}\}\s*", "", getattr(exc, "message", None) or str(exc))
    reason = f"{type(exc).__name__}: {text}" if text.strip() else type(exc).__name__
    kind = getattr(sys.modules.get("tensorflow"), "errors", None)
    if isinstance(exc, MemoryError) or (
            kind is not None and isinstance(exc, kind.ResourceExhaustedError)):
        return (f"memory ran out ({summary(reason, 200)}): try a smaller "
                f"{_SMALLER.get(command, '--image-size')}")
    return reason


def _check_scheduler(args):
    """Check --scheduler's address and that a scheduler answers, before any work."""
    if getattr(args, "scheduler", None) is None:
        return
    from pipelines.cluster import probe_scheduler

    probe_scheduler(args.scheduler, args.scheduler_timeout)


@contextlib.contextmanager
def _pixel_budget(max_pixels):
    """--max-pixels for this command only (--image-size: ``check_options``): ``main``
    may run again in this process, with the default."""
    if max_pixels is None:
        yield
        return
    if max_pixels < 1:
        raise ValueError(f"--max-pixels must be at least 1, got {max_pixels}")
    from embedder.data.decoding import get_max_pixels, set_max_pixels

    previous = get_max_pixels()
    set_max_pixels(max_pixels)
    try:
        yield
    finally:
        set_max_pixels(previous)


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
