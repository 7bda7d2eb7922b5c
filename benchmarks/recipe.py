"""Stage-one recipe experiments on Fashion-MNIST and Omniglot (evidence for the defaults).

    python -m benchmarks.recipe --loss batch_all --learning-rate 1e-3 --epochs 8
    python -m benchmarks.recipe --loss batch_hard --no-warmup --classes 0,2,3,4,6
    python -m benchmarks.recipe --task omniglot --image-size 56 --augment digits

Fashion-MNIST: trains ``small_cnn`` at 28x28 on the train split (optionally a class
subset), embeds the test split and reports kNN accuracy (k=5, the
classifiers.make_head("knn") default) and logistic regression on the embeddings, with
raw-pixel kNN as the baseline of the same run. Omniglot: trains on the 136 background
characters at ``--image-size`` px and reports leave-one-out P@1, R-precision and MAP@R
over the 106 unseen characters (:mod:`benchmarks.retrieval`'s protocol).
One JSON line per run is appended to ``benchmarks/results/recipe.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks.common import augment_option  # noqa: E402
from classifiers import make_head  # noqa: E402
from embedder import TripletEmbedder  # noqa: E402
from embedder.data.datasets import load_fashion_mnist  # noqa: E402
from embedder.metrics import retrieval_scores  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "recipe.jsonl"


def _subset(X, y, classes):
    if classes is None:
        return X, y
    keep = np.isin(y, classes)
    return X[keep], y[keep]


def _omniglot(args):
    """Train on the background characters; retrieval scores over the unseen ones."""
    from benchmarks.retrieval import load, scores

    size = args.image_size or 28
    X_train, y_train, X_eval, y_eval, _ = load(None, (size, size, 1))
    est = _estimator(args, (size, size, 1))
    facts = _fit(est, X_train, y_train)
    return {**facts, "unseen_retrieval": scores(est.transform(X_eval), y_eval)}


def _fit(est, X, y):
    """Fit ``est``; its training seconds, epochs, collapse flag and last loss."""
    t0 = time.perf_counter()
    est.fit(X, y)
    return {"train_seconds": round(time.perf_counter() - t0, 1),
            "epochs_run": len(est.history_.get("loss", [])), "collapsed": est.collapsed_,
            "final_loss": est.history_["loss"][-1]}


def _estimator(args, input_shape):
    if args.encoder == "peer_cnn":  # issue 14's peer network, registered by the benchmark
        from benchmarks.peer import register_peer_encoder

        register_peer_encoder()
    return TripletEmbedder(
        encoder=args.encoder, input_shape=input_shape, embedding_dim=args.embedding_dim,
        loss=args.loss, margin=args.margin, samples_per_class=args.samples_per_class,
        classes_per_batch=args.classes_per_batch, epochs=args.epochs,
        learning_rate=args.learning_rate, validation_fraction=args.validation_fraction,
        augment=augment_option(args.augment), warmup_epochs=0 if args.no_warmup else 1,
        precision=args.precision, memory_size=args.memory_size, random_state=args.seed,
        verbose=2,
    )


def _fashion(args):
    classes = [int(c) for c in args.classes.split(",")] if args.classes else None
    X_train, y_train = _subset(*load_fashion_mnist("train"), classes)
    X_test, y_test = _subset(*load_fashion_mnist("test"), classes)
    if args.train_size:
        X_train, y_train = X_train[: args.train_size], y_train[: args.train_size]
    est = _estimator(args, (28, 28, 1))
    result = _fit(est, X_train, y_train)
    Z_train, Z_test = est.transform(X_train), est.transform(X_test)
    for name in ("knn", "logreg"):
        head = make_head(name).fit(Z_train, y_train)
        result[f"{name}_accuracy"] = float(head.score(Z_test, y_test))
    raw = make_head("knn").fit(X_train.reshape(len(X_train), -1) / 255.0, y_train)
    result["raw_knn_accuracy"] = float(raw.score(X_test.reshape(len(X_test), -1) / 255.0, y_test))
    result["test_retrieval"] = retrieval_scores(Z_test, y_test)
    return result


def run(args):
    result = {"args": vars(args),
              **(_omniglot(args) if args.task == "omniglot" else _fashion(args))}
    result["machine"] = f"{platform.machine()} {os.cpu_count()} cores"
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="fashion", choices=["fashion", "omniglot"])
    p.add_argument("--image-size", type=int, default=None, help="omniglot: 28 (default), 56")
    p.add_argument("--encoder", default="small_cnn")
    p.add_argument("--loss", default="batch_all")
    p.add_argument("--margin", type=float, default=None)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--samples-per-class", type=int, default=4)
    p.add_argument("--classes-per-batch", type=int, default=None)
    p.add_argument("--embedding-dim", type=int, default=64)
    p.add_argument("--validation-fraction", type=float, default=0.05)
    p.add_argument("--classes", default=None, help="e.g. 0,2,3,4,6 (the hard five)")
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--augment", nargs="?", const=True, default=False,
                   help="alone: True; or a preset name (digits, photo)")
    p.add_argument("--memory-size", type=int, default=0)
    p.add_argument("--no-warmup", action="store_true")
    p.add_argument("--precision", default=None, choices=["mixed_bfloat16", "mixed_float16"])
    p.add_argument("--seed", type=int, default=0)
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
