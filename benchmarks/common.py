"""Shared helpers: machine description, timing, targets, the trainer's compiled model."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
RESULTS_DIR = ROOT / "results"
#: Unpacked and generated data (git-ignored); ``$BENCHMARK_CACHE`` moves it.
CACHE_DIR = Path(os.environ.get("BENCHMARK_CACHE", ROOT / ".cache"))
MODES = ("smoke", "quick", "full")


class DataUnavailable(RuntimeError):
    """A data set a benchmark needs is not installed; the message says how to get it."""


def machine_info():
    """Platform, CPUs, load and library versions, for the results files."""
    import keras
    import sklearn
    import tensorflow as tf

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
            text=True, timeout=10, check=False,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "scikit_learn": sklearn.__version__,
        "numpy": np.__version__,
        "git_commit": commit,
    }


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def command_line():
    """The command that is running, as a user would type it."""
    if sys.argv and sys.argv[0].endswith("run.py"):
        return " ".join(["python -m benchmarks.run", *sys.argv[1:]])
    return " ".join(["python", *sys.argv])


def summary(values, digits=4):
    """``{"median": ..., "values": [...]}`` of per-repetition numbers."""
    values = [float(v) for v in values]
    return {
        "median": round(float(np.median(values)), digits) if values else None,
        "values": [round(v, digits) for v in values],
    }


def target(name, measured, threshold, *, higher_is_better=True, unit="", note="", if_missed=""):
    """A target as stored in the results: the measured figure and whether it is met.

    ``if_missed`` says why a miss happens and what would close it (shown only on a miss).
    """
    met = None
    if measured is not None and np.isfinite(measured):
        met = bool(measured >= threshold if higher_is_better else measured <= threshold)
    return {
        "name": name,
        "target": f"{'>=' if higher_is_better else '<='} {threshold:g}{unit}",
        "measured": None if measured is None else round(float(measured), 4),
        "unit": unit,
        "met": met,
        "note": note,
        "if_missed": if_missed,
    }


class Stopwatch:
    """Wall-clock seconds of a ``with`` block (``perf_counter``).

    Also ``own_cores``, this process's CPU time per wall second (all its threads), and
    ``foreign_cores``: CPU time that *other* processes (and the hypervisor, as steal time)
    used during the block, per wall second, from ``/proc/stat`` minus this process's own;
    ``None`` where ``/proc/stat`` is unavailable. Near 0 means nothing else competed for
    the cores while the block ran.
    """

    def __enter__(self):
        self.seconds = self.foreign_cores = self.own_cores = None
        self._busy, self._own = _busy_seconds(), time.process_time()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        own = time.process_time() - self._own
        self.own_cores = own / self.seconds if self.seconds > 0 else None
        busy = _busy_seconds()
        if busy is not None and self._busy is not None and self.seconds > 0:
            self.foreign_cores = max(0.0, busy - self._busy - own) / self.seconds


def _busy_seconds():
    """CPU seconds spent by everything (user, system, irq and steal), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:9]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def trainer_model(encoder, loss, input_shape, *, n_classes=16, samples_per_class=4, seed=0,
                  compiled=True):
    """The compiled model that the library's trainer runs for ``encoder``.

    Built by :func:`embedder.training.build_training_run` from the default
    :class:`~embedder.training.config.TrainingConfig` (``loss`` and the batch shape changed), so
    the benchmarks time exactly what users run: the trainer's optimizer, loss and
    diagnostics. ``compiled=False`` gives the run so few steps that the trainer compiles
    the model to run eagerly (smoke tests: no graph tracing).
    """
    from embedder.training.config import TrainingConfig
    from embedder.training.run import EAGER_MAX_STEPS, build_training_run

    rng = np.random.default_rng(seed)
    # more steps than EAGER_MAX_STEPS, so the trainer compiles the step as it does for users
    per_class = samples_per_class * (EAGER_MAX_STEPS + 1 if compiled else 1)
    y = np.repeat(np.arange(n_classes), per_class)
    X = rng.integers(0, 256, size=(len(y), *input_shape), dtype=np.uint8)
    config = TrainingConfig(loss=loss, classes_per_batch=n_classes,
                            samples_per_class=samples_per_class, epochs=1,
                            validation_fraction=0.0, random_state=seed)
    return build_training_run(encoder, X, y, config, input_shape=input_shape).model


def training_miss(mode, n_train, epochs_run, max_epochs, train_seconds, budget=900):
    """Why a quality target was missed, from the run's facts, and candidate remedies."""
    parts = []
    if mode != "full":
        parts.append(f"{mode} mode trains on {n_train} images for at most {max_epochs} "
                     "epoch(s), far below the protocol (whole training set, the recipe's "
                     "epochs), so a miss here says little")
    stopped = epochs_run < max_epochs
    parts.append(f"the encoder trained {epochs_run} of {max_epochs} epoch(s) in "
                 f"{train_seconds:g} s" + (f" (budget {budget} s)" if budget else "")
                 + ("; early stopping on validation MAP@R ended it" if stopped else
                    "; it was still allowed to improve when the epochs ran out"))
    remedies = ["more epochs" if not stopped and train_seconds < (budget or 1e9) / 2 else None,
                "augmentation (augment=True)", "a wider encoder or embedding",
                "tuning the recipe's learning rate and margin for this data"]
    parts.append("candidates to close it (not measured in this run): "
                 + ", ".join(r for r in remedies if r))
    return "; ".join(parts) + "."


def step_runner(model, dataset):
    """``run(n)``: ``n`` training steps of ``model``'s compiled step, returns when done.

    One ``fit`` step builds and traces the step function; after that the steps are the
    function ``fit`` itself calls once per batch (``model.train_function``: forward pass,
    loss, gradients, optimizer update, metric updates), fed from one persistent iterator.
    Timing separate ``fit`` calls instead would add a new iterator and the callbacks'
    set-up to every repetition: up to 0.3 s each, and erratic, on the benchmark machine.
    """
    import keras

    model.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)
    iterator = iter(dataset)
    train = model.train_function
    train(iterator)  # a plain iterator (fit's is a distributed one) traces the step again

    def run(n):
        logs = None
        for _ in range(n):
            logs = train(iterator)
        if logs:  # read a result back: the last step has finished
            keras.ops.convert_to_numpy(next(iter(logs.values())))

    return run


def batch_runner(model, x, y):
    """``run(n)``: ``n`` training steps of ``model`` on one in-memory batch (no pipeline).

    ``train_on_batch`` runs the same compiled step ``fit`` runs per batch (forward pass,
    loss, gradients, optimizer update, metric updates) and returns once it is done; the
    first call here builds and traces it.
    """
    model.train_on_batch(x, y)

    def run(n):
        for _ in range(n):
            model.train_on_batch(x, y)

    return run


def augment_option(value):
    """A script's ``--augment`` value for ``TripletEmbedder``: true/false, else a preset."""
    return {"false": False, "true": True}.get(str(value).lower(), value)


def embedder_params(**overrides):
    """``TripletEmbedder``'s defaults now, with ``overrides`` (``None`` values ignored)."""
    from embedder import TripletEmbedder

    params = TripletEmbedder().get_params()
    params.update({k: v for k, v in overrides.items() if v is not None})
    return params


def stratified_subset(y, n, seed=0):
    """Sorted indices of a class-stratified random subset of ``n`` items (all if fewer)."""
    y = np.asarray(y)
    if n is None or n >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    return np.sort(idx)
