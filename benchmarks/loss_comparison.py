"""Benchmark 6: the five losses on the two quality benchmarks with the same budget.

Batch-all, batch-hard, semi-hard, contrastive and the seed's offline triplets are each
trained with the same recipe (``TripletEmbedder`` defaults, each loss's default margin)
and the same number of epochs on:

- Fashion-MNIST, the hard five classes (a stratified subsample of the train split in the
  reduced modes), scored by kNN and logistic regression on the test split;
- Omniglot, unseen-character retrieval (P@1, MAP@R), as in :mod:`benchmarks.retrieval`.

An offline-triplet epoch runs as many steps as an in-batch epoch but each step forwards
three images per triplet, so it sees three times the images: its training time is
reported beside the scores. The reduced modes skip the validation split (and so early
stopping), whose per-fit set-up would dominate their short runs.
"""

from __future__ import annotations

from benchmarks import classification, retrieval
from benchmarks.common import embedder_params
from benchmarks.datasets import HARD_FIVE

LOSSES = ("batch_all", "batch_hard", "semi_hard", "contrastive", "triplet")
SETTINGS = {
    "smoke": {"fashion": {"train_n": 160, "test_n": 100, "epochs": 1}, "validation": 0.0,
              "omniglot": {"max_classes": 12, "epochs": 1},
              "losses": ("batch_all", "triplet")},  # one in-batch and the offline path
    "quick": {"fashion": {"train_n": 1000, "test_n": 1000, "epochs": 2}, "validation": 0.0,
              "omniglot": {"max_classes": None, "epochs": 2}, "losses": LOSSES},
    "full": {"fashion": {"train_n": 10000, "test_n": None, "epochs": 5},
             "omniglot": {"max_classes": None, "epochs": 20}, "losses": LOSSES},
}


def _winner(rows, key):
    ranked = sorted(rows, key=lambda loss: rows[loss][key], reverse=True)
    best, second = ranked[0], ranked[1]
    return {"metric": key, "winner": best, "value": rows[best][key], "runner_up": second,
            "margin": round(rows[best][key] - rows[second][key], 4)}


def run(mode, options=None):
    options = options or {}
    s = SETTINGS[mode]
    fashion_cfg = {**s["fashion"], "svm_max_train": None}
    omni_cfg = s["omniglot"]
    X_train, y_train, X_test, y_test = classification.load_task(
        list(HARD_FIVE), fashion_cfg["train_n"], fashion_cfg["test_n"])
    O_train, o_train, O_eval, o_eval, omni_facts = retrieval.load(omni_cfg["max_classes"])
    fashion, omni = {}, {}
    for loss in s["losses"]:
        common = {"encoder": "small_cnn", "input_shape": (28, 28, 1), "random_state": 0,
                  "loss": loss, "learning_rate": options.get("learning_rate"),
                  "validation_fraction": s.get("validation"), "verbose": options.get("verbose")}
        params = embedder_params(**common, epochs=fashion_cfg["epochs"])
        Z_train, Z_test, facts = classification.train_and_embed(X_train, y_train, X_test,
                                                                params)
        heads = classification.score_heads(Z_train, y_train, Z_test, y_test,
                                           ("knn", "logreg"), None)
        fashion[loss] = {
            "knn_accuracy": heads["knn"]["accuracy"],
            "logreg_accuracy": heads["logreg"]["accuracy"],
            "best_accuracy": max(heads["knn"]["accuracy"], heads["logreg"]["accuracy"]),
            "macro_f1_best": max(h["macro_f1"] for h in heads.values()), **facts,
        }
        params = embedder_params(**common, epochs=omni_cfg["epochs"])
        omni[loss] = retrieval.train_and_score(O_train, o_train, O_eval, o_eval, params)
    return {
        "fashion_mnist_hard_5": {"n_train": int(len(y_train)), "n_test": int(len(y_test)),
                                 "epochs": fashion_cfg["epochs"], "results": fashion,
                                 "winner": _winner(fashion, "best_accuracy")},
        "omniglot_unseen": {**omni_facts, "epochs": omni_cfg["epochs"], "results": omni,
                            "winner": _winner(omni, "map_at_r")},
        "recipe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in embedder_params(
            validation_fraction=s.get("validation")).items() if k not in ("loss", "margin")},
        "targets": [],
    }
