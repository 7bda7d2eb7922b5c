"""Benchmark: the user's own shape end to end, ``triplet evaluate --cv 3`` then the refit.

The user's case (DESIGN section 1, issue 20): five classes of RGB 112x112 images, one class
four times larger than the others. This benchmark makes such folders from three sources:

- ``fashion``: five Fashion-MNIST train classes (T-shirt, trouser, pullover, sandal, bag;
  the T-shirt class four times larger), each 28x28 image upscaled to 112x112 (bilinear);
- ``digits``: scikit-learn's 8x8 digits 0-4 upscaled (bilinear), the 0s four times more
  (the set has ~180 images a class, so its folder is smaller: 40 a class, 160 zeros);
- ``flowers``: real photos from ``../shared/data/flowers`` (128 px JPEG, resized to 112),
  dandelion the large class (``FLOWERS_DIR`` names another folder); reported as
  unavailable where the folder is missing.

Every image is written as an RGB PNG. It then runs the command a user would run,
``triplet evaluate FOLDER --out DIR --cv 3`` with the CLI's defaults (the seed CNN, the
default recipe), in a fresh process: three folds, each training the encoder on its own
training part only, then the refit of the best head's pipeline on all images. It reports
the wall time of the whole command, the report's accuracies, each fold's epochs and stop
reason, and the saved model's accuracy on **held-out images** of the same classes that
``evaluate`` never saw (30 a class), predicted in another fresh process.

``python -m benchmarks.run --full --only user_shape`` (all three folders), or one folder
against any checkout: ``python -m benchmarks.user_shape --dataset flowers --code-root DIR``.
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

from benchmarks.common import ROOT, DataUnavailable, target

#: T-shirt (the majority class), trouser, pullover, sandal, bag.
CLASSES = (0, 1, 2, 5, 8)
MAJORITY_FACTOR = 4
FLOWERS = ("dandelion", "daisy", "rose", "sunflower", "tulip")  # the first is the large one
HELD_OUT_PER_CLASS = 30
DATASETS = ("fashion", "digits", "flowers")
SETTINGS = {
    "smoke": {"per_class": 6, "size": 32, "extra": ["--epochs", "1"], "datasets": ("fashion",)},
    "quick": {"per_class": 40, "size": 112, "extra": [], "datasets": ("fashion",)},
    "full": {"per_class": 110, "size": 112, "extra": [], "datasets": DATASETS},
}
#: Per class in the digits folder (scikit-learn's digits hold ~180 images a class).
DIGITS_PER_CLASS = 40
#: The target of issue 20 for each folder.
MAX_SECONDS = 120
#: One run of the whole command may take this long before it is stopped.
TIMEOUT = 3600


def _fashion_images():
    from benchmarks import datasets

    X, y = datasets.fashion_mnist("train")
    return {c: X[y == c][..., 0] for c in CLASSES}


def _digits_images():
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(digits.images * (255 / 16), 0, 255).astype(np.uint8)
    return {c: pixels[digits.target == c] for c in range(5)}


def _flowers_images():
    folder = Path(os.environ.get("FLOWERS_DIR")
                  or ROOT.parent.parent / "shared" / "data" / "flowers")
    if not folder.is_dir():
        raise DataUnavailable(f"no flowers photos at {folder} (see issue 20)")
    return {name: sorted((folder / name).glob("*.jpg")) for name in FLOWERS}


def _image(item, size):
    from PIL import Image

    image = Image.open(item) if isinstance(item, Path) else Image.fromarray(item)
    return image.convert("RGB").resize((size, size), Image.BILINEAR)


def make_folder(dataset, per_class, size):
    """The class folder and its held-out images (made once); their paths and counts.

    Returns ``(folder, held_out_folder, n_images)``; the first class is the large one.
    """
    from benchmarks import datasets

    source = {"fashion": _fashion_images, "digits": _digits_images,
              "flowers": _flowers_images}[dataset]()
    if dataset == "digits":
        per_class = min(per_class, DIGITS_PER_CLASS)
    root = datasets.CACHE_DIR / f"user-shape-{dataset}-{per_class}-{size}"
    counts = {c: per_class * (MAJORITY_FACTOR if i == 0 else 1) for i, c in enumerate(source)}
    if not (root / "done").exists():
        rng = np.random.default_rng(0)
        for c, n in counts.items():
            items = source[c]
            order = rng.permutation(len(items))
            held = min(HELD_OUT_PER_CLASS, len(items) - n)
            for part, chosen in (("train", order[:n]), ("held_out", order[n:n + held])):
                if not len(chosen):
                    continue
                folder = root / part / f"class_{c}"
                folder.mkdir(parents=True, exist_ok=True)
                for i, index in enumerate(chosen):
                    _image(items[index], size).save(folder / f"{i:04d}.png")
        (root / "done").write_text("ok")
    return root / "train", root / "held_out", sum(counts.values())


def _env(code_root):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(code_root), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _children_cpu():
    """CPU seconds used by finished child processes (less disturbed by load than wall)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def evaluate(folder, extra, code_root, out):
    """Run ``triplet evaluate FOLDER --cv 3`` in a fresh process; wall seconds and report."""
    cmd = [sys.executable, "-m", "pipelines", "evaluate", str(folder), "--out", str(out),
           "--cv", "3", "--seed", "0", *extra]
    start, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(cmd, cwd=code_root, env=_env(code_root), capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
    seconds = time.perf_counter() - start
    (Path(out) / "cpu_seconds.txt").write_text(f"{_children_cpu() - cpu:.1f}")
    if done.returncode != 0:
        raise RuntimeError(f"triplet evaluate failed ({done.returncode}): "
                           f"{done.stderr[-2000:]}")
    (Path(out) / "stdout.txt").write_text(done.stdout)
    report = json.loads((Path(out) / "report.json").read_text())
    if not (Path(out) / "model.joblib").is_file():
        raise RuntimeError("triplet evaluate wrote no model.joblib (the refit)")
    command = " ".join(["triplet", *cmd[3:4], "FOLDER", *cmd[5:6], "DIR", *cmd[7:]])
    return seconds, report, command


_HELD_OUT = """
import json, sys
import numpy as np
from embedder.data.datasets import load_dataset
from pipelines import load_pipeline
X, y = load_dataset(sys.argv[2])
model = load_pipeline(sys.argv[1], trusted=True)
print(json.dumps({"accuracy": float(np.mean(model.predict(X) == y)), "n": len(y)}))
"""


def held_out_accuracy(model_path, held_out, code_root):
    """The saved model's accuracy on the held-out folder, in a fresh process."""
    done = subprocess.run([sys.executable, "-c", _HELD_OUT, str(model_path), str(held_out)],
                          cwd=code_root, env=_env(code_root), capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"held-out prediction failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def classes_of(folder):
    """Class folder name -> number of PNGs."""
    return {p.name: len(list(p.glob("*.png"))) for p in sorted(Path(folder).iterdir())}


def _head_scores(report):
    """Mean accuracy and balanced accuracy of each head of a report's JSON."""
    scores = {}
    for head, result in report["heads"].items():
        mean = result["mean"]
        scores[head] = {k: round(float(mean[k]), 4) for k in ("accuracy", "balanced_accuracy")
                        if k in mean}
    return scores


def _fold_stops(report):
    """Epochs run, epoch kept and stop reason of each fold (what the report recorded)."""
    out = []
    for fold in report.get("folds", []):
        validation = fold.get("validation") or {}
        out.append({"epochs_run": validation.get("epochs_run",
                                                 len(fold.get("history", {}).get("loss", []))),
                    "epoch_kept": validation.get("epoch_kept"),
                    "stop_reason": validation.get("stop_reason"),
                    "fit_seconds": round(fold.get("encoder_fit_time") or 0.0, 1)})
    return out


def run_folder(dataset, mode, code_root=None, extra=()):
    """One folder: the whole command, its report and the held-out accuracy.

    ``extra`` options are added to the command (e.g. ``["--samples-per-class", "4"]``).
    """
    s = {**SETTINGS[mode]}
    s["extra"] = [*s["extra"], *extra]
    code_root = Path(code_root or ROOT.parent)
    folder, held_out, n_images = make_folder(dataset, s["per_class"], s["size"])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="user-shape-") as out:
        seconds, report, command = evaluate(folder, s["extra"], code_root, out)
        held = {"accuracy": float("nan"), "n": 0}
        if held_out.is_dir() and len(list(held_out.iterdir())) == len(classes_of(folder)):
            held = held_out_accuracy(Path(out) / "model.joblib", held_out, code_root)
        refit_lines = [line for line in (Path(out) / "stdout.txt").read_text().splitlines()
                       if line.startswith("refitting")]
        cpu_seconds = float((Path(out) / "cpu_seconds.txt").read_text())
    scores = _head_scores(report)
    best = max(scores, key=lambda h: scores[h]["accuracy"])
    summary = (f"{seconds:.1f} s wall, best head {best}: CV accuracy "
               f"{scores[best]['accuracy']:.4f}, held-out accuracy of the saved model "
               f"{held['accuracy']:.4f} on {held['n']} images ({n_images} PNGs, "
               f"{s['size']} px, {dataset})")
    classes = classes_of(folder)
    return {
        "dataset": dataset, "code_root": str(code_root), "command": command,
        "n_images": n_images, "image_size": s["size"], "classes": classes,
        "wall_seconds": round(seconds, 1), "cpu_seconds": cpu_seconds,
        "heads": scores, "best_head": best,
        "held_out": held, "folds": _fold_stops(report), "refit": refit_lines,
        "notes": report.get("notes", []),
        "load_average": {"before": [round(v, 2) for v in load_before],
                         "after": [round(v, 2) for v in os.getloadavg()]},
        "summary": summary, "met": seconds <= MAX_SECONDS,
    }


def run(mode, options=None):
    s = SETTINGS[mode]
    folders = {}
    for dataset in s["datasets"]:
        try:
            folders[dataset] = run_folder(dataset, mode)
        except DataUnavailable as exc:
            folders[dataset] = {"unavailable": str(exc)}
    first = folders[s["datasets"][0]]
    if "unavailable" in first:
        raise DataUnavailable(first["unavailable"])
    targets = [target(f"{name}: wall seconds of triplet evaluate --cv 3 + refit",
                      r["wall_seconds"], MAX_SECONDS, higher_is_better=False, unit=" s",
                      note=f"{r['n_images']} PNGs of {r['image_size']} px, CLI defaults; "
                      f"held-out accuracy {r['held_out']['accuracy']:.4f}",
                      if_missed="see the per-fold epochs and stop reasons")
               for name, r in folders.items() if "unavailable" not in r]
    return {**first, "folders": folders, "targets": targets}


def main(argv=None):
    p = argparse.ArgumentParser(description="one user-shape folder against a checkout")
    p.add_argument("--dataset", choices=DATASETS, required=True)
    p.add_argument("--mode", choices=tuple(SETTINGS), default="full")
    p.add_argument("--code-root", type=Path, default=None,
                   help="the checkout whose `triplet evaluate` runs (default: this one)")
    p.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    p.add_argument("extra", nargs=argparse.REMAINDER,
                   help="more `triplet evaluate` options, after --")
    args = p.parse_args(argv)
    extra = [a for a in args.extra if a != "--"]
    result = run_folder(args.dataset, args.mode, args.code_root, extra)
    text = json.dumps(result, indent=1)
    if args.out is not None:
        from embedder.files import atomic_write_text

        atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
