"""Benchmark 3: ``TripletEmbedder.transform`` images/s and peak memory, from PNG files.

For each ``n`` a fresh subprocess (in smoke mode, the calling process) fits a
``small_cnn`` embedder (28x28x1) on a few hundred images for one epoch (the weights do not
matter for speed or memory), warms ``transform`` up on a few files, resets the kernel's
peak-RSS counter (``/proc/self/clear_refs``) and embeds the first ``n`` Fashion-MNIST
training images from PNG files. The peak RSS of that call (``VmHWM`` in
``/proc/self/status``) is compared across ``n``: a streaming pipeline grows only by its
output (``n x dim`` float32 rows, up to twice while Keras joins the batches) and the list
of paths, never by the decoded images.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

from benchmarks.common import ROOT, summary, target
from benchmarks.datasets import fashion_mnist, image_folder

SHAPE = (28, 28, 1)
SETTINGS = {  # smoke measures both sizes in the calling process (no TensorFlow start-up)
    "smoke": {"sizes": (100, 300), "repeats": 1, "in_process": True},
    "quick": {"sizes": (1000, 5000), "repeats": 2},
    "full": {"sizes": (10000, 60000), "repeats": 3},
}


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


class PeakRSS:
    """Peak resident memory (MB) of the process during a ``with`` block.

    Resets the kernel's high-water mark when allowed, else samples ``VmRSS`` every 5 ms.
    """

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._thread = None
        except OSError:
            self._samples = [_status_kb("VmRSS")]
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self._samples.append(_status_kb("VmRSS"))

    def __exit__(self, *exc):
        if self._thread is None:
            self.peak_mb = _status_kb("VmHWM") / 1024
            self.method = "VmHWM after clear_refs"
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self._samples) / 1024
            self.method = "VmRSS sampled every 5 ms"


def worker(sizes, folder_n, repeats):
    """Measure in this process; return one dict per size."""
    from benchmarks.common import embedder_params
    from embedder import TripletEmbedder

    X, y = fashion_mnist.__wrapped__("train")  # not kept in the cache: freed below
    paths, _ = image_folder(X[:folder_n], y[:folder_n], "fashion-mnist-png")
    params = embedder_params(encoder="small_cnn", input_shape=SHAPE, epochs=1,
                             validation_fraction=0.0, random_state=0)
    fit_n = min(320, folder_n)
    est = TripletEmbedder(**params).fit(X[:fit_n], y[:fit_n])
    est.transform(list(paths[: min(512, folder_n)]))  # traces predict
    del X, y
    results = []
    for n in sizes:
        images = list(paths[:n])
        startup_peak = _status_kb("VmHWM") / 1024
        before = _status_kb("VmRSS") / 1024
        seconds, peaks = [], []
        for _ in range(repeats):
            with PeakRSS() as peak:
                start = time.perf_counter()
                Z = est.transform(images)
                seconds.append(time.perf_counter() - start)
            peaks.append(peak.peak_mb)
            del Z
        results.append({
            "n": n, "seconds": seconds, "peak_rss_mb": peaks, "rss_before_mb": before,
            "startup_peak_rss_mb": startup_peak, "method": peak.method,
            "embedding_dim": int(est.encoder_.output_shape[-1]),
        })
    return results


def _run_worker(sizes, folder_n, repeats):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.inference", "--sizes", ",".join(map(str, sizes)),
         "--folder-n", str(folder_n), "--repeats", str(repeats)],
        cwd=ROOT.parent, env=env, capture_output=True, text=True, check=False,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or len(lines) != len(sizes):
        raise RuntimeError(f"inference worker (sizes={sizes}) failed:\n{out.stderr[-3000:]}")
    return [json.loads(line) for line in lines]


def run(mode, options=None):
    s = SETTINGS[mode]
    sizes = s["sizes"]
    X, y = fashion_mnist("train")
    largest = max(sizes)
    image_folder(X[:largest], y[:largest], "fashion-mnist-png")  # written once
    del X, y
    if s.get("in_process"):
        runs = worker(sizes, largest, s["repeats"])
    else:  # a fresh process per size: the peak of one cannot hide in the other's heap
        runs = [r for n in sizes for r in _run_worker([n], largest, s["repeats"])]
    per_n = []
    for r in runs:
        per_n.append({
            "n": r["n"],
            "images_per_second": summary([r["n"] / t for t in r["seconds"]], 1),
            "peak_rss_mb": summary(r["peak_rss_mb"], 1),
            "rss_before_mb": round(r["rss_before_mb"], 1),
            "peak_increase_mb": round(float(np.median(r["peak_rss_mb"])) - r["rss_before_mb"], 1),
            "startup_peak_rss_mb": round(r["startup_peak_rss_mb"], 1),
        })
    small, large = per_n[0], per_n[-1]
    growth_mb = large["peak_rss_mb"]["median"] - small["peak_rss_mb"]["median"]
    per_image = growth_mb * 2**20 / (large["n"] - small["n"])
    dim = runs[0]["embedding_dim"]
    decoded = int(np.prod(SHAPE)) * 4
    return {
        "encoder": "small_cnn", "input_shape": list(SHAPE), "source": "PNG files",
        "batch_size": 256, "peak_method": runs[0]["method"], "per_n": per_n,
        "processes": "one process for all n" if s.get("in_process") else "a fresh process per n",
        "peak_growth_mb": round(growth_mb, 1),
        "peak_growth_bytes_per_image": round(per_image, 1),
        "output_bytes_per_image": 4 * dim,
        "decoded_image_bytes": decoded,
        "targets": [target(
            f"peak RSS growth per extra image, n={small['n']}->{large['n']}", per_image,
            decoded, higher_is_better=False, unit=" B",
            note=f"bound: one decoded float32 image ({decoded} B); the output is {4 * dim} B "
                 "per image (up to twice while Keras joins the batches)",
        )],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description="inference benchmark worker (one measurement)")
    p.add_argument("--sizes", required=True, help="comma-separated numbers of images")
    p.add_argument("--folder-n", type=int, required=True)
    p.add_argument("--repeats", type=int, default=1)
    a = p.parse_args(argv)
    for result in worker([int(n) for n in a.sizes.split(",")], a.folder_n, a.repeats):
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
