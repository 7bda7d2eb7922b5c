"""Benchmark: colour photos from scratch, the flowers set split 80/20 (issue 20).

The protocol: every photo of ``../shared/data/flowers`` (5 classes, 4,317 JPEGs of
128 px; ``FLOWERS_DIR`` names another folder), a stratified 80/20 split with seed 0
(3,453 train / 864 test), decoded once to ``S x S`` RGB (bilinear; S = ``--image-size``).
An encoder is trained from scratch (no pretrained weights) by ``TripletEmbedder`` on the
training part with the given recipe (default: the library's defaults), the kNN,
logistic-regression and SVM heads of :func:`classifiers.make_head` are fitted on the
training embeddings and scored on the test part. The baseline of the same run: an RBF
SVM on the raw colour pixels at 32 px.

Target: test accuracy of the best head >= 0.80 with training <= 600 s on 2 cores.

    python -m benchmarks.photos --image-size 64 --augment photo --epochs 40
    python -m benchmarks.run --full --only photos     # the library's defaults, 112 px

One JSON line per run of the first form is appended to ``benchmarks/results/photos.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    DataUnavailable,
    Stopwatch,
    augment_option,
    machine_info,
    target,
)

FLOWERS = ("daisy", "dandelion", "rose", "sunflower", "tulip")
TEST_FRACTION = 0.2
MIN_ACCURACY = 0.80
MAX_TRAIN_SECONDS = 600
RESULTS = Path(__file__).parent / "results" / "photos.jsonl"
SETTINGS = {
    "smoke": {"per_class": 12, "size": 32, "epochs": 1},
    "quick": {"per_class": 120, "size": 64, "epochs": 5},
    "full": {"per_class": None, "size": 112, "epochs": None},
}


def flowers_folder() -> Path:
    folder = Path(os.environ.get("FLOWERS_DIR")
                  or Path(__file__).resolve().parents[2] / "shared" / "data" / "flowers")
    if not all((folder / name).is_dir() for name in FLOWERS):
        raise DataUnavailable(f"no flowers photos at {folder} (5 class folders: "
                              f"{', '.join(FLOWERS)})")
    return folder


def load_split(size, per_class=None, seed=0):
    """``(X_train, y_train, X_test, y_test)``: uint8-valued float32 images of ``size`` px."""
    from sklearn.model_selection import train_test_split

    from embedder.data.image_pipeline import decode_all

    folder = flowers_folder()
    paths, labels = [], []
    for label, name in enumerate(FLOWERS):
        files = sorted(str(p) for p in (folder / name).glob("*.jpg"))[:per_class]
        paths += files
        labels += [label] * len(files)
    paths, labels = np.asarray(paths), np.asarray(labels)
    tr, te = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION,
                              stratify=labels, random_state=seed)
    X = decode_all(paths, (size, size, 3))
    return X[tr], labels[tr], X[te], labels[te]


def raw_baseline(X_train, y_train, X_test, y_test):
    """RBF SVM on raw colour pixels resized to 32 px (scaled to 0..1)."""
    import tensorflow as tf
    from sklearn.svm import SVC

    def flat(X):
        return tf.image.resize(X, (32, 32)).numpy().reshape(len(X), -1) / 255.0

    return float(SVC().fit(flat(X_train), y_train).score(flat(X_test), y_test))


def train_and_score(X_train, y_train, X_test, y_test, params):
    """Fit ``TripletEmbedder(**params)``; seconds, facts and each head's test accuracy."""
    from classifiers import make_head
    from embedder import TripletEmbedder

    est = TripletEmbedder(**params)
    with Stopwatch() as sw:
        est.fit(X_train, y_train)
    E_train, E_test = est.transform(X_train), est.transform(X_test)
    accuracy = {head: float(make_head(head).fit(E_train, y_train).score(E_test, y_test))
                for head in ("knn", "logreg", "svm")}
    facts = {"epochs_run": len(est.history_.get("loss", [])),
             "stop_reason": getattr(est, "stop_reason_", None),
             "collapsed": bool(est.collapsed_)}
    return sw, facts, accuracy


def experiment(args):
    """One recipe (the command line's), one JSON line in ``results/photos.jsonl``."""
    X_train, y_train, X_test, y_test = load_split(args.image_size)
    params = {"input_shape": (args.image_size, args.image_size, 3), "encoder": args.encoder,
              "loss": args.loss, "augment": augment_option(args.augment), "epochs": args.epochs,
              "random_state": args.seed, "verbose": 2}
    for name in ("classes_per_batch", "samples_per_class", "learning_rate", "patience",
                 "validation_fraction", "embedding_dim", "margin", "memory_size"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    sw, facts, accuracy = train_and_score(X_train, y_train, X_test, y_test, params)
    record = {"params": {k: str(v) if k == "input_shape" else v for k, v in params.items()},
              "train_seconds": round(sw.seconds, 1),
              "own_cores": round(sw.own_cores or 0, 2),
              "foreign_cores": round(sw.foreign_cores or 0, 2), **facts,
              "accuracy": accuracy, "best": max(accuracy.values()),
              "n_train": len(y_train), "n_test": len(y_test),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "machine": machine_info()["processor"]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:  # an append-only log, one line per finished run
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record))


def run(mode, options=None):
    """The library's defaults on the 80/20 split (``benchmarks.run`` entry point)."""
    s = SETTINGS[mode]
    X_train, y_train, X_test, y_test = load_split(s["size"], s["per_class"])
    params = {"input_shape": (s["size"], s["size"], 3), "random_state": 0,
              "verbose": (options or {}).get("verbose") or 0}
    if s["epochs"]:
        params["epochs"] = s["epochs"]
    sw, facts, accuracy = train_and_score(X_train, y_train, X_test, y_test, params)
    raw = raw_baseline(X_train, y_train, X_test, y_test)
    best = max(accuracy, key=accuracy.get)
    note = (f"{len(y_train)} train / {len(y_test)} test photos at {s['size']} px, library "
            f"defaults, {facts['epochs_run']} epochs ({facts['stop_reason']}); raw-pixel RBF "
            f"SVM {raw:.4f}")
    return {"accuracy": accuracy, "raw_svm": raw, "train_seconds": round(sw.seconds, 1),
            **facts, "targets": [
                target(f"flowers 80/20: test accuracy of the best head ({best})",
                       accuracy[best], MIN_ACCURACY, note=note),
                target("flowers 80/20: training seconds", sw.seconds, MAX_TRAIN_SECONDS,
                       higher_is_better=False, unit=" s", note=note)]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--encoder", default="seed_cnn")
    p.add_argument("--loss", default="batch_all")
    p.add_argument("--augment", default="false", help="false, true or a preset name")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    for name, kind in (("classes_per_batch", int), ("samples_per_class", int),
                       ("learning_rate", float), ("patience", int),
                       ("validation_fraction", float), ("embedding_dim", int),
                       ("margin", float), ("memory_size", int)):
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    experiment(p.parse_args(argv))


if __name__ == "__main__":
    main()
