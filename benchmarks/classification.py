"""Benchmark 4: Fashion-MNIST classification, embeddings vs raw pixels, same heads.

Train split -> test split, for all 10 classes and for the hard five {0, 2, 3, 4, 6}
(T-shirt, pullover, dress, coat, shirt). A ``TripletEmbedder`` with the library's default
recipe (its constructor defaults, except ``encoder="small_cnn"`` and
``input_shape=(28, 28, 1)``; command-line overrides are recorded) is trained on the train
split of each task; kNN, logistic-regression and SVM heads (``classifiers.make_head``
defaults; the SVM with ``probability=False``) are fitted on its train embeddings and on the
raw train pixels scaled to 0..1, and scored on the test split. The RBF SVM's fit grows
quadratically with the number of items, so it is fitted on a stratified subsample of at
most ``svm_max_train`` items, the same one for both feature sets.
"""

from __future__ import annotations

import warnings

import numpy as np

from benchmarks.common import (
    Stopwatch,
    embedder_params,
    stratified_subset,
    target,
    training_miss,
)
from benchmarks.datasets import HARD_FIVE, fashion_mnist, subset_classes

SHAPE = (28, 28, 1)
HEADS = ("knn", "logreg", "svm")
SETTINGS = {
    "smoke": {"train_n": 160, "test_n": 100, "epochs": 1, "svm_max_train": 160},
    "quick": {"train_n": 3000, "test_n": 2000, "epochs": 3, "svm_max_train": 3000},
    "full": {"train_n": None, "test_n": None, "epochs": None, "svm_max_train": 20000},
}


def _head(name):
    from classifiers import make_head

    return make_head(name, probability=False) if name == "svm" else make_head(name)


def score_heads(F_train, y_train, F_test, y_test, heads, svm_max_train):
    """Accuracy, macro-F1 and fit/predict seconds of each head on the features given."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, f1_score

    out = {}
    for name in heads:
        idx = np.arange(len(y_train))
        if name == "svm":
            idx = stratified_subset(y_train, svm_max_train)
        head = _head(name)
        with warnings.catch_warnings(record=True) as caught, Stopwatch() as fit:
            warnings.simplefilter("always", ConvergenceWarning)
            head.fit(F_train[idx], y_train[idx])
        with Stopwatch() as pred:
            predicted = head.predict(F_test)
        out[name] = {
            "accuracy": round(float(accuracy_score(y_test, predicted)), 4),
            "macro_f1": round(float(f1_score(y_test, predicted, average="macro")), 4),
            "fit_seconds": round(fit.seconds, 2),
            "predict_seconds": round(pred.seconds, 2),
            "n_train": int(len(idx)),
            "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught),
        }
    return out


def train_and_embed(X_train, y_train, X_test, params):
    """Fit a ``TripletEmbedder``; return (train, test embeddings, training facts)."""
    from embedder import TripletEmbedder

    est = TripletEmbedder(**params)
    with Stopwatch() as fit:
        est.fit(X_train, y_train)
    with Stopwatch() as emb:
        Z_train, Z_test = est.transform(X_train), est.transform(X_test)
    history = est.history_
    facts = {
        "train_seconds": round(fit.seconds, 1),
        "embed_seconds": round(emb.seconds, 1),
        "epochs_run": len(history.get("loss", [])),
        "collapsed": bool(est.collapsed_),
        "final_loss": _last(history, "loss"),
        "best_val_map_at_r": _best(history, "val_map_at_r"),
    }
    return Z_train, Z_test, facts


def _last(history, key):
    values = history.get(key) or [None]
    return None if values[-1] is None else round(float(values[-1]), 4)


def _best(history, key):
    values = history.get(key)
    return round(float(np.nanmax(values)), 4) if values else None


def load_task(classes, train_n, test_n):
    """Train/test images of the Fashion-MNIST task, optionally stratified subsamples."""
    X_train, y_train = fashion_mnist("train")
    X_test, y_test = fashion_mnist("test")
    if classes is not None:
        X_train, y_train = subset_classes(X_train, y_train, classes)
        X_test, y_test = subset_classes(X_test, y_test, classes)
    tr, te = stratified_subset(y_train, train_n), stratified_subset(y_test, test_n)
    return X_train[tr], y_train[tr], X_test[te], y_test[te]


def run_task(classes, s, params, heads=HEADS, raw=True):
    from embedder.metrics import retrieval_scores

    X_train, y_train, X_test, y_test = load_task(classes, s["train_n"], s["test_n"])
    Z_train, Z_test, facts = train_and_embed(X_train, y_train, X_test, params)
    result = {
        "classes": sorted(np.unique(y_train).tolist()),
        "n_train": int(len(y_train)), "n_test": int(len(y_test)),
        **facts,
        "embeddings": score_heads(Z_train, y_train, Z_test, y_test, heads, s["svm_max_train"]),
        "test_retrieval": {k: round(float(v), 4) for k, v in
                           retrieval_scores(Z_test, y_test).items()},
    }
    if raw:
        def flat(X):
            return X.reshape(len(X), -1).astype(np.float32) / 255.0

        result["raw_pixels"] = score_heads(flat(X_train), y_train, flat(X_test), y_test,
                                           heads, s["svm_max_train"])
    return result


def best_head(scores):
    name = max(scores, key=lambda h: scores[h]["accuracy"])
    return name, scores[name]["accuracy"]


def run(mode, options=None):
    options = options or {}
    s = dict(SETTINGS[mode])
    if options.get("svm_max_train") is not None:
        s["svm_max_train"] = options["svm_max_train"] or None
    params = embedder_params(
        encoder="small_cnn", input_shape=SHAPE, random_state=0,
        epochs=options.get("epochs") or s["epochs"], loss=options.get("loss"),
        learning_rate=options.get("learning_rate"), margin=options.get("margin"),
        verbose=options.get("verbose"),
    )
    tasks = {"all_10": run_task(None, s, params), "hard_5": run_task(list(HARD_FIVE), s, params)}
    targets = []
    for key, threshold, label in (("all_10", 0.92, "10 classes"), ("hard_5", 0.88, "hard 5")):
        task = tasks[key]
        head, acc = best_head(task["embeddings"])
        raw_head, raw_acc = best_head(task["raw_pixels"])
        targets.append(target(
            f"test accuracy, best head, {label}", acc, threshold,
            note=f"best head: {head}; raw pixels, best head ({raw_head}): {raw_acc}",
            if_missed=training_miss(mode, task["n_train"], task["epochs_run"],
                                    params["epochs"], task["train_seconds"])))
    for key, label in (("all_10", "10 classes"), ("hard_5", "hard 5")):
        targets.append(target(f"encoder training time, {label}", tasks[key]["train_seconds"],
                              900, higher_is_better=False, unit=" s"))
    return {
        "embedder_params": {k: (list(v) if isinstance(v, tuple) else v)
                            for k, v in params.items()},
        "settings": s, "tasks": tasks, "targets": targets,
    }
