"""Benchmark: the user's own shape end to end, ``triplet evaluate --cv 3`` then the refit.

The user's case (DESIGN section 1): five classes of RGB 112x112 images, one class much
larger than the others. This benchmark makes such a folder from Fashion-MNIST: five train
classes (T-shirt, trouser, pullover, sandal, bag; the T-shirt class four times larger),
each 28x28 image upscaled to 112x112 (bilinear) and written as an RGB PNG. It then runs
the command a user would run, ``triplet evaluate FOLDER --out DIR --cv 3`` with the CLI's
defaults (the seed CNN, the default recipe): three folds, each training the encoder on
its own training part only, then the refit of the best head's pipeline on all images.
It reports the wall time of the whole command (a fresh process: imports, decoding,
four trainings, the report and the saved model) and the report's accuracies.

``python -m benchmarks.run --full --only user_shape``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import target

#: T-shirt (the majority class), trouser, pullover, sandal, bag.
CLASSES = (0, 1, 2, 5, 8)
MAJORITY_FACTOR = 4
SETTINGS = {
    "smoke": {"per_class": 6, "size": 32, "extra": ["--epochs", "1"]},
    "quick": {"per_class": 40, "size": 112, "extra": []},
    "full": {"per_class": 110, "size": 112, "extra": []},
}
#: The targets of issue 14 for this row.
MAX_SECONDS = 300
#: One run of the whole command may take this long before it is stopped.
TIMEOUT = 3600


def make_folder(per_class, size):
    """The class folder (made once per size and count); return its path and image count."""
    from PIL import Image

    from benchmarks import datasets

    X, y = datasets.fashion_mnist("train")
    root = datasets.CACHE_DIR / f"user-shape-{per_class}-{size}"
    counts = {c: per_class * (MAJORITY_FACTOR if c == CLASSES[0] else 1) for c in CLASSES}
    if not (root / "done").exists():
        for c, n in counts.items():
            folder = root / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i, index in enumerate(np.flatnonzero(y == c)[:n]):
                image = Image.fromarray(X[index, :, :, 0]).convert("RGB")
                image.resize((size, size), Image.BILINEAR).save(folder / f"{i:04d}.png")
        (root / "done").write_text("ok")
    return root, sum(counts.values())


def evaluate(folder, extra):
    """Run ``triplet evaluate FOLDER --cv 3`` in a fresh process; wall seconds and report."""
    with tempfile.TemporaryDirectory(prefix="user-shape-") as out:
        cmd = [sys.executable, "-m", "pipelines", "evaluate", str(folder), "--out", out,
               "--cv", "3", "--seed", "0", *extra]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT, check=False)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"triplet evaluate failed ({done.returncode}): "
                               f"{done.stderr[-2000:]}")
        report = json.loads((Path(out) / "report.json").read_text())
        if not (Path(out) / "model.joblib").is_file():
            raise RuntimeError("triplet evaluate wrote no model.joblib (the refit)")
    return seconds, report, " ".join(["triplet", *cmd[3:4], "FOLDER", *cmd[5:6], "DIR",
                                      *cmd[7:]])


def _head_scores(report):
    """Mean accuracy and balanced accuracy of each head of a report's JSON."""
    scores = {}
    for head, result in report["heads"].items():
        mean = result["mean"]
        scores[head] = {k: round(float(mean[k]), 4) for k in ("accuracy", "balanced_accuracy")
                        if k in mean}
    return scores


def run(mode, options=None):
    s = SETTINGS[mode]
    folder, n_images = make_folder(s["per_class"], s["size"])
    seconds, report, command = evaluate(folder, s["extra"])
    scores = _head_scores(report)
    best = max(scores, key=lambda h: scores[h]["accuracy"])
    summary = (f"{seconds:.1f} s wall, best head {best}: accuracy "
               f"{scores[best]['accuracy']:.4f}, balanced {scores[best]['balanced_accuracy']:.4f}"
               f" ({n_images} PNGs, {s['size']} px)")
    return {
        "command": command, "n_images": n_images, "image_size": s["size"],
        "classes": {f"class_{c}": s["per_class"] * (MAJORITY_FACTOR if c == CLASSES[0] else 1)
                    for c in CLASSES},
        "wall_seconds": round(seconds, 1), "heads": scores, "best_head": best,
        "summary": summary, "met": seconds <= MAX_SECONDS,
        "targets": [target("wall seconds of triplet evaluate --cv 3 + refit", seconds,
                           MAX_SECONDS, higher_is_better=False, unit=" s",
                           note=f"{n_images} PNGs of {s['size']} px, CLI defaults",
                           if_missed="see the per-fold training times in the report")],
    }
