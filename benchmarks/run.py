"""Run the benchmarks, write ``results/<name>.json`` and regenerate ``BENCHMARKS.md``.

    python -m benchmarks.run --quick              # reduced, under 5 minutes (make bench-quick)
    python -m benchmarks.run --full               # the evaluation protocol (make bench)
    python -m benchmarks.run --quick --only throughput,retrieval
    python -m benchmarks.run --smoke --results-dir /tmp/r   # seconds; checks the code paths

A benchmark whose data set (or peer library) is missing is recorded as unavailable, with
how to install it, and the others still run; the exit status is 1 only if a benchmark
failed (raised an error), so a clean clone without ``../shared/data`` exits 0.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path

from threadpoolctl import threadpool_limits

from benchmarks.common import (
    CACHE_DIR,
    MODES,
    RESULTS_DIR,
    DataUnavailable,
    command_line,
    machine_info,
)

# before TensorFlow is imported (lazily, by the benchmarks)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: name -> (module, title), in report order
BENCHMARKS = {
    "throughput": ("benchmarks.throughput", "Training-step throughput"),
    "input_pipeline": ("benchmarks.input_pipeline", "Input pipeline: files on disk vs memory"),
    "inference": ("benchmarks.inference", "Inference speed and peak memory"),
    "classification": ("benchmarks.classification", "Fashion-MNIST classification"),
    "retrieval": ("benchmarks.retrieval", "Omniglot retrieval on unseen characters"),
    "loss_comparison": ("benchmarks.loss_comparison", "Loss comparison, same budget"),
    "peer": ("benchmarks.peer", "Peer: pytorch-metric-learning on the same network"),
    "profile_step": ("benchmarks.profile_step", "Where the training step's time goes"),
}
#: Benchmarks of other modules, run when their module exists in this checkout.
OPTIONAL = {
    "open_set": ("benchmarks.open_set", "Open-set recognition"),
    "ann": ("benchmarks.ann", "Approximate nearest-neighbour head"),
    "scaling": ("benchmarks.scaling", "Scale-out: streaming and parallel folds"),
    "user_shape": ("benchmarks.user_shape", "The user's shape end to end: triplet evaluate"),
    "photos": ("benchmarks.photos", "Colour photos from scratch: flowers 80/20"),
}


def _has_run(module_name):
    """Whether the benchmark module exists and defines ``run`` (one being written may not)."""
    if importlib.util.find_spec(module_name) is None:
        return False
    return callable(getattr(importlib.import_module(module_name), "run", None))


BENCHMARKS.update({name: entry for name, entry in OPTIONAL.items() if _has_run(entry[0])})


def _quiet():
    import logging
    import warnings

    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*triggered tf.function retracing.*")


def run_one(name, mode, options, results_dir):
    """Run benchmark ``name``; write and return its results record."""
    module_name, title = BENCHMARKS[name]
    record = {"name": name, "title": title, "mode": mode, "command": command_line(),
              "options": {k: v for k, v in options.items() if v is not None},
              "started": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": machine_info()}
    start = time.perf_counter()
    try:
        record["result"] = importlib.import_module(module_name).run(mode, options)
        record["status"] = "ok"
    except DataUnavailable as err:
        record["status"], record["reason"] = "unavailable", str(err)
    except Exception as err:  # keep going: one broken benchmark must not hide the rest
        record["status"], record["reason"] = "error", f"{type(err).__name__}: {err}"
        record["traceback"] = traceback.format_exc()[-4000:]
    record["wall_seconds"] = round(time.perf_counter() - start, 1)
    record["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    results_dir.mkdir(parents=True, exist_ok=True)
    from embedder.files import atomic_write_text

    atomic_write_text(results_dir / f"{name}.json",
                      json.dumps(record, indent=1, default=_jsonable) + "\n")
    return record


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = p.add_mutually_exclusive_group(required=True)
    for mode in MODES:
        size.add_argument(f"--{mode}", dest="mode", action="store_const", const=mode)
    p.add_argument("--only", default=None,
                   help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="default: benchmarks/results (smoke: benchmarks/.cache/smoke-results)")
    p.add_argument("--report", type=Path, default=None,
                   help="markdown file to regenerate (default: BENCHMARKS.md beside results)")
    recipe = p.add_argument_group("recipe overrides (default: TripletEmbedder's defaults)")
    recipe.add_argument("--loss", default=None, help="classification and retrieval")
    recipe.add_argument("--epochs", type=int, default=None, help="classification, retrieval")
    recipe.add_argument("--learning-rate", type=float, default=None)
    recipe.add_argument("--margin", type=float, default=None)
    recipe.add_argument("--svm-max-train", type=int, default=None,
                        help="SVM training subsample in classification (0: all)")
    p.add_argument("--peer-log", type=Path, default=None,
                   help="peer: report the runs logged in this file (by an interrupted peer "
                   "benchmark) instead of running it")
    comparison = p.add_argument_group("loss_comparison")
    comparison.add_argument("--losses", default=None,
                            help="comma-separated variants (default: every loss, +xbm ones)")
    comparison.add_argument("--seeds", type=int, default=None, help="seeds per variant")
    comparison.add_argument("--resume", action="store_true",
                            help="reuse variants a full run with the same settings and commit "
                            "logged in results/loss_comparison_runs.jsonl")
    p.add_argument("--verbose", type=int, default=None,
                   help="training progress: 0 none, 2 one line per epoch (default: 2 in full)")
    args = p.parse_args(argv)
    names = list(BENCHMARKS) if args.only is None else args.only.split(",")
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        p.error(f"--only must name benchmarks among {list(BENCHMARKS)}, got {unknown}")
    args.names = names
    if args.results_dir is None:
        args.results_dir = CACHE_DIR / "smoke-results" if args.mode == "smoke" else RESULTS_DIR
    return args


def main(argv=None):
    args = parse_args(argv)
    _quiet()
    from benchmarks import report

    verbose = args.verbose if args.verbose is not None else (2 if args.mode == "full" else None)
    options = {"loss": args.loss, "epochs": args.epochs, "learning_rate": args.learning_rate,
               "margin": args.margin, "svm_max_train": args.svm_max_train, "verbose": verbose,
               "peer_log": args.peer_log, "seeds": args.seeds, "resume": args.resume,
               "losses": args.losses.split(",") if args.losses else None}
    failed, start = [], time.perf_counter()
    # One BLAS thread for the scikit-learn parts: once TensorFlow has trained in a process,
    # a 2-thread OpenBLAS logistic-regression fit ran 13x slower than a 1-thread one on
    # the 2-core benchmark machine (threads contending); TensorFlow does not use OpenBLAS.
    with threadpool_limits(limits=1, user_api="blas"):
        for name in args.names:
            print(f"[benchmarks] {name} ({args.mode}) at {time.perf_counter() - start:.0f} s ...",
                  file=sys.stderr, flush=True)
            record = run_one(name, args.mode, options, args.results_dir)
            print(f"[benchmarks] {name}: {record['status']} in {record['wall_seconds']} s"
                  + (f" ({record['reason']})" if record["status"] != "ok" else ""),
                  file=sys.stderr, flush=True)
            if record["status"] == "error":  # unavailable data is reported, not a failure
                failed.append(name)
    out = args.report or args.results_dir.parent / "BENCHMARKS.md"
    report.write_report(args.results_dir, out)
    print(f"[benchmarks] wrote {out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
