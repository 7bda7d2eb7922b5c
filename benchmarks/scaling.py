"""Benchmark: scaling out — streaming ``triplet embed`` memory, 1 vs 2 replicas.

- **Streaming memory.** ``triplet embed ENCODER DATA.csv --out X.npy`` on ``n`` synthetic
  28x28 grey PNGs (``small_cnn``, 128-d output), each ``n`` in a fresh process; the
  process's peak RSS (``VmHWM``) is compared across ``n``. Growth per extra image must be
  at most 600 B (the issue's bound: the size of a 128-d float32 row plus a little).
  Rows go straight to the file, so what grows is only the list of paths and labels
  (measured in stages: ~200 B per image for loading the CSV, ~120 B for TensorFlow's copy
  of the paths), never decoded images or collected embeddings.
- **Replicas.** Training-step images/s of the same tiny in-batch triplet model with no
  strategy and with ``tf.distribute.MirroredStrategy`` over 2 logical CPU devices (one
  physical CPU split in two, each in a fresh process): on CPU this measures the
  strategy's overhead, not a speed-up; on a machine with 2 GPUs the same code splits the
  batch over them.

The PNGs are written once to ``$SCALING_PNG_DIR`` (default ``/tmp/triplet-scaling-png``);
100k files take about a minute.

    python -m benchmarks.scaling --mode quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, summary, target

SHAPE = (28, 28, 1)
DIM = 128
N_CLASSES = 10
BYTES_PER_IMAGE_BOUND = 600
SETTINGS = {
    "smoke": {"sizes": (1000, 2000), "replica_steps": 3, "replica_repeats": 1},
    "quick": {"sizes": (2000, 10_000), "replica_steps": 20, "replica_repeats": 3},
    "full": {"sizes": (10_000, 100_000), "replica_steps": 50, "replica_repeats": 5},
}
_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT.parent)}


def png_folder(n, root=None):
    """``root``/cK/NNNNNNN.png for the first ``n`` synthetic images, plus ``list-n.csv``.

    Images are written once and reused by later calls (also by larger ``n``).
    """
    from PIL import Image

    root = Path(root or os.environ.get("SCALING_PNG_DIR", "/tmp/triplet-scaling-png"))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(N_CLASSES, *SHAPE[:2]), dtype=np.uint8)
    paths, labels = [], []
    for i in range(n):
        label = i % N_CLASSES
        path = root / f"c{label}" / f"{i:07d}.png"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            noise = np.random.default_rng(i).integers(0, 64, size=SHAPE[:2], dtype=np.uint8)
            Image.fromarray(base[label] // 2 + noise).save(path)
        paths.append(str(path))
        labels.append(f"c{label}")
    listing = root / f"list-{n}.csv"
    if not listing.is_file():
        import pandas as pd

        from embedder.files import atomic_write_text

        atomic_write_text(listing, pd.DataFrame({"path": paths, "label": labels})
                          .to_csv(index=False))
    return listing


def _encoder_file(folder):
    code = ("import sys, keras; from embedder.models.encoders import build_encoder; "
            "keras.utils.set_random_seed(0); "
            f"build_encoder('small_cnn', {SHAPE}, {DIM}).save(sys.argv[1])")
    path = Path(folder) / "small_cnn_128.keras"
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=ROOT.parent,
                   env={**os.environ, **_ENV}, capture_output=True)
    return path


_EMBED = """
import json, sys, time
from pipelines.cli.main import main
start = time.perf_counter()
code = main(sys.argv[1:])
seconds = time.perf_counter() - start
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({"code": code, "seconds": seconds,
                  "peak_kb": int(status["VmHWM"].split()[0])}))
"""


def embed_peak(encoder, listing, out):
    """Run ``triplet embed`` in a fresh process; its exit code, seconds and peak RSS (kB)."""
    argv = ["embed", str(encoder), str(listing), "--image-size", str(SHAPE[0]),
            "--out", str(out)]
    done = subprocess.run([sys.executable, "-c", _EMBED, *argv], cwd=ROOT.parent,
                          env={**os.environ, **_ENV}, capture_output=True, text=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines or json.loads(lines[-1])["code"] != 0:
        raise RuntimeError(f"triplet embed failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def streaming_memory(sizes):
    """Peak RSS of ``triplet embed`` at each size and the growth per extra image."""
    with tempfile.TemporaryDirectory() as tmp:
        encoder = _encoder_file(tmp)
        runs = []
        for n in sizes:
            listing = png_folder(n)
            out = Path(tmp) / f"emb-{n}.npy"
            r = embed_peak(encoder, listing, out)
            Z = np.load(out, mmap_mode="r")
            if Z.shape != (n, DIM):
                raise ValueError(f"{out} holds an array of shape {Z.shape}, expected "
                                 f"{(n, DIM)}")
            runs.append({"n": n, "peak_rss_mb": round(r["peak_kb"] / 1024, 1),
                         "seconds": round(r["seconds"], 2),
                         "images_per_second": round(n / r["seconds"], 1)})
            out.unlink()
    small, large = runs[0], runs[-1]
    per_image = (large["peak_rss_mb"] - small["peak_rss_mb"]) * 2**20 / (large["n"] - small["n"])
    return {
        "command": f"triplet embed small_cnn_128.keras list-N.csv --image-size {SHAPE[0]} "
                   "--out emb-N.npy",
        "per_n": runs,
        "peak_growth_bytes_per_image": round(per_image, 1),
        "output_bytes_per_image": 4 * DIM,
        "targets": [target(
            f"peak RSS growth per extra image, n={small['n']}->{large['n']}", per_image,
            BYTES_PER_IMAGE_BOUND, higher_is_better=False, unit=" B",
            note=f"an output row is {4 * DIM} B; it goes to the file, not to memory: what "
                 "grows is the list of paths and labels",
        )],
    }


_REPLICAS = """
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
replicas, cross, steps, repeats = (int(a) for a in sys.argv[1:5])
if replicas > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
import keras
from embedder.models.encoders import build_encoder
from embedder.training.trainer import InBatchTrainer
strategy = tf.distribute.MirroredStrategy() if replicas > 1 else tf.distribute.get_strategy()
keras.utils.set_random_seed(0)
with strategy.scope():
    model = InBatchTrainer(build_encoder("small_cnn", (28, 28, 1), 128), "batch_all",
                           cross_replica=bool(cross))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
rng = np.random.default_rng(0)
x = rng.integers(0, 256, size=(64, 28, 28, 1)).astype("float32")
y = np.repeat(np.arange(16), 4).astype("int32")
data = tf.data.Dataset.from_tensors((x, y)).repeat()
model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)  # builds and traces the step
seconds = []
for _ in range(repeats):
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    seconds.append(time.perf_counter() - start)
print("RESULT " + json.dumps({"replicas": replicas, "cross_replica": bool(cross),
                              "images_per_second": [steps * 64 / s for s in seconds]}))
"""


def replica_throughput(steps, repeats):
    """Training images/s of a 64-image P x K step with 1 replica and with 2 (CPU split)."""
    runs = []
    for replicas, cross in ((1, 0), (2, 0), (2, 1)):
        args = [str(a) for a in (replicas, cross, steps, repeats)]
        done = subprocess.run([sys.executable, "-c", _REPLICAS, *args], cwd=ROOT.parent,
                              env={**os.environ, **_ENV}, capture_output=True, text=True)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        if done.returncode or not lines:
            raise RuntimeError(f"replica run {args} failed:\n{done.stderr[-3000:]}")
        r = json.loads(lines[-1][len("RESULT "):])
        r["images_per_second"] = summary(r["images_per_second"], 1)
        runs.append(r)
    one = runs[0]["images_per_second"]["median"]
    for r in runs:
        r["ratio_to_one_replica"] = round(r["images_per_second"]["median"] / one, 3)
    return {"encoder": "small_cnn 28x28x1 -> 128-d, batch_all, P x K = 16 x 4",
            "devices": "logical CPU devices of one CPU (tf.config.set_logical_device_"
                       "configuration); measures the strategy's overhead, not a speed-up",
            "runs": runs}


def dask_folds(n_images=600, cv=3):
    """Wall time of ``cross_validate_report`` sequential vs 2 Dask workers (if installed).

    Returns ``{"available": False, ...}`` when ``dask.distributed`` is missing.
    """
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        return {"available": False, "reason": "pip install 'dask[distributed]'"}
    import joblib

    from benchmarks.datasets import fashion_mnist
    from classifiers import make_head
    from embedder import TripletEmbedder
    from pipelines import cross_validate_report, make_triplet_pipeline

    X, y = fashion_mnist("train")
    X, y = X[:n_images], y[:n_images]
    pipe = make_triplet_pipeline(TripletEmbedder("small_cnn", input_shape=SHAPE,
                                                 embedding_dim=32, epochs=2,
                                                 random_state=0), make_head("knn"))
    out = {"available": True, "n_images": n_images, "cv": cv}
    start = time.perf_counter()
    seq = cross_validate_report(pipe, X, y, cv=cv, heads=("knn",))
    out["sequential_seconds"] = round(time.perf_counter() - start, 1)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster), joblib.parallel_config(backend="dask"):
        start = time.perf_counter()
        par = cross_validate_report(pipe, X, y, cv=cv, heads=("knn",), n_jobs=2)
        out["dask_2_workers_seconds"] = round(time.perf_counter() - start, 1)
    out["speed_up"] = round(out["sequential_seconds"] / out["dask_2_workers_seconds"], 2)
    out["identical_scores"] = bool(seq.heads["knn"].folds["accuracy"]
                                   == par.heads["knn"].folds["accuracy"])
    return out


def run(mode, options=None):
    """Run the scaling benchmark in ``mode`` (smoke, quick or full); return the record."""
    s = SETTINGS[mode]
    memory = streaming_memory(s["sizes"])
    if mode != "full":  # below 10k images TensorFlow's buffers still ramp up (~15 MB)
        memory["note"] = ("growth per image is only meaningful from 10k images on (full "
                          "mode); here TensorFlow's own buffers still ramp up")
        memory["targets"] = []
    replicas = replica_throughput(s["replica_steps"], s["replica_repeats"])
    folds = dask_folds() if mode != "smoke" else {"available": False, "reason": "smoke"}
    return {"streaming_memory": memory, "replicas": replicas, "dask_folds": folds,
            "targets": memory["targets"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=tuple(SETTINGS), default="quick")
    p.add_argument("--only", choices=("memory", "replicas", "folds"))
    a = p.parse_args(argv)
    s = SETTINGS[a.mode]
    if a.only == "memory":
        result = streaming_memory(s["sizes"])
    elif a.only == "replicas":
        result = replica_throughput(s["replica_steps"], s["replica_repeats"])
    elif a.only == "folds":
        result = dask_folds()
    else:
        result = run(a.mode)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()


def section_lines(result):
    """Markdown lines of a :func:`run` record for BENCHMARKS.md (the targets come after)."""
    m, r, f = result["streaming_memory"], result["replicas"], result["dask_folds"]
    lines = [f"**Streaming `triplet embed`** (`{m['command']}`, a fresh process per n):", "",
             "| images | peak RSS (MB) | seconds | images/s |", "|---|---|---|---|"]
    lines += [f"| {p['n']} | {p['peak_rss_mb']} | {p['seconds']} | {p['images_per_second']} |"
              for p in m["per_n"]]
    lines += ["", f"Peak RSS growth: {m['peak_growth_bytes_per_image']} B per extra image "
              f"(a 128-d float32 row is {m['output_bytes_per_image']} B). "
              + m.get("note", ""), "",
              f"**Replicas** ({r['encoder']}; {r['devices']}):", "",
              "| replicas | cross_replica | images/s (median) | vs 1 replica |",
              "|---|---|---|---|"]
    lines += [f"| {x['replicas']} | {x['cross_replica']} | "
              f"{x['images_per_second']['median']} | {x['ratio_to_one_replica']} |"
              for x in r["runs"]]
    if f.get("available"):
        lines += ["", f"**Dask folds** ({f['n_images']} Fashion-MNIST images, {f['cv']} "
                  f"folds): sequential {f['sequential_seconds']} s, 2 Dask workers "
                  f"{f['dask_2_workers_seconds']} s (x{f['speed_up']}); identical scores: "
                  f"{f['identical_scores']}."]
    else:
        lines += ["", f"Dask folds not measured: {f.get('reason')}."]
    return lines
