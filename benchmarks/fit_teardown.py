"""The wait between the end of training and ``fit`` returning, with and without autotuning.

Found while profiling the peer run (issue 14): after the last epoch, ``model.fit`` sometimes
took 5-40 s more to return. py-spy showed the main thread deleting the training iterator
and joining tf.data's autotuning model thread, which sleeps on a timer that the deletion
does not cut short. ``embedder.data.image_pipeline`` therefore switches autotuning off.

This script trains the peer network (``benchmarks.peer``, 2 epochs by default) in fresh
subprocesses, alternating ``autotune=on`` (the pipeline's option switched back on) and
``autotune=off`` (the library as shipped), and records for each run the ``fit`` seconds,
the seconds from ``on_train_end`` to ``fit`` returning, and images/s. One JSON line per
run goes to ``benchmarks/results/teardown.jsonl`` (rewritten atomically).

``python -m benchmarks.fit_teardown --rounds 5 --epochs 2``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "teardown.jsonl"
MODES = ("on", "off")


def _patch(autotune):
    """Time ``fit``'s end through a callback; optionally switch autotuning back on."""
    import keras
    import tensorflow as tf

    import embedder.training.run as training

    marks = {}
    original = training.training_dataset

    def dataset(*args, **kwargs):
        ds = original(*args, **kwargs)
        if autotune:
            options = tf.data.Options()
            options.autotune.enabled = True  # later options override earlier ones
            ds = ds.with_options(options)
        return ds

    class Mark(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            marks["train_end"] = time.perf_counter()

    fit = keras.Model.fit

    def timed_fit(self, *args, callbacks=None, **kwargs):
        start = time.perf_counter()
        result = fit(self, *args, callbacks=[*(callbacks or []), Mark()], **kwargs)
        marks["fit_seconds"] = time.perf_counter() - start
        marks["teardown_seconds"] = time.perf_counter() - marks["train_end"]
        return result

    training.training_dataset = dataset
    keras.Model.fit = timed_fit
    return marks


def worker(autotune, epochs, seed):
    """One training run in this process; print its JSON line."""
    marks = _patch(autotune)
    from benchmarks import peer

    X_train, y_train, X_test, _ = peer.load_data()
    _, _, sw, facts = peer.train_ours(X_train, y_train, X_test, epochs, seed)
    images = facts["train_images_per_epoch"] * facts["epochs_run"]
    print(json.dumps({
        "autotune": "on" if autotune else "off", "epochs": epochs, "seed": seed,
        "fit_seconds": round(marks["fit_seconds"], 2),
        "teardown_seconds": round(marks["teardown_seconds"], 2),
        "images_per_second": round(images / sw.seconds, 1),
        "images_per_second_without_teardown": round(
            images / (sw.seconds - marks["teardown_seconds"]), 1),
    }))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--worker", choices=MODES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker == "on", args.epochs, args.seed)
        return 0
    from embedder.files import atomic_write_text

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    lines = RESULTS.read_text().splitlines() if RESULTS.exists() else []
    for r in range(args.rounds):
        for mode in MODES:
            cmd = [sys.executable, "-m", "benchmarks.fit_teardown", "--worker", mode,
                   "--epochs", str(args.epochs), "--seed", str(args.seed)]
            done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                                  check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row.update(round=r, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
            print(json.dumps(row), flush=True)
            lines.append(json.dumps(row))
            atomic_write_text(RESULTS, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
