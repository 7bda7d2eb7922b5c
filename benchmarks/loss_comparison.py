"""Benchmark 6: every registered loss, with and without cross-batch memory, same budget.

Each variant (a loss of :data:`embedder.losses.LOSSES` at its registered defaults, plus
``+xbm`` variants of pair losses with ``memory_size``) is trained with the same recipe
(``TripletEmbedder`` defaults, the same encoder, P x K sampler and epochs) and several
seeds on:

- Fashion-MNIST, the hard five classes (a stratified subsample of the train split in the
  reduced modes), scored by kNN and logistic regression on the test split;
- Omniglot, unseen-character retrieval (P@1, MAP@R), as in :mod:`benchmarks.retrieval`.

Each score is the mean over the seeds, with its standard deviation beside it
(``<score>_std``); the winner is ranked by the mean and reported with its lead and the
seeds' spread. An offline-triplet epoch runs as many steps as an in-batch epoch but
forwards three images per triplet: its training time is reported beside the scores. The
reduced modes skip the validation split (and so early stopping), whose per-fit set-up
would dominate their short runs. ``options["losses"]`` restricts the variants and
``options["seeds"]`` the number of seeds (a smaller run states so in its record).
"""

from __future__ import annotations

import numpy as np

from benchmarks import classification, retrieval
from benchmarks.common import embedder_params
from benchmarks.datasets import HARD_FIVE

#: Pair losses that also run with a cross-batch memory of this many rows (``+xbm``).
MEMORY_LOSSES = ("batch_hard", "multi_similarity", "supervised_contrastive")
MEMORY_SIZE = 1024


def variants():
    """``{variant: (loss, memory_size)}``: every registered loss, then the memory ones."""
    from embedder.losses import LOSSES

    out = {name: (name, 0) for name in LOSSES}
    out.update({f"{name}+xbm": (name, MEMORY_SIZE) for name in MEMORY_LOSSES if name in LOSSES})
    return out


SETTINGS = {
    "smoke": {"fashion": {"train_n": 160, "test_n": 100, "epochs": 1}, "validation": 0.0,
              "omniglot": {"max_classes": 12, "epochs": 1}, "seeds": 1,
              "losses": ("batch_all", "triplet", "arcface", "multi_similarity+xbm")},
    "quick": {"fashion": {"train_n": 1000, "test_n": 1000, "epochs": 2}, "validation": 0.0,
              "omniglot": {"max_classes": None, "epochs": 2}, "seeds": 3, "losses": None},
    "full": {"fashion": {"train_n": 10000, "test_n": None, "epochs": 5},
             "omniglot": {"max_classes": None, "epochs": 20}, "seeds": 3, "losses": None},
}
FASHION_KEYS = ("knn_accuracy", "logreg_accuracy", "best_accuracy", "macro_f1_best",
                "train_seconds", "epochs_run")
OMNIGLOT_KEYS = ("precision_at_1", "r_precision", "map_at_r", "train_seconds", "epochs_run")


def _winner(rows, key):
    ranked = sorted(rows, key=lambda name: rows[name][key], reverse=True)
    best, second = ranked[0], ranked[1] if len(ranked) > 1 else ranked[0]
    return {"metric": key, "winner": best, "value": rows[best][key], "runner_up": second,
            "margin": round(rows[best][key] - rows[second][key], 4),
            "spread": max(rows[best].get(f"{key}_std", 0.0),
                          rows[second].get(f"{key}_std", 0.0))}


def summarise(runs, keys):
    """Mean and standard deviation over seeds of each score in ``keys``; flags any-of."""
    out = {}
    for key in keys:
        values = np.asarray([r[key] for r in runs], dtype=float)
        out[key] = round(float(values.mean()), 4)
        out[f"{key}_std"] = round(float(values.std()), 4)
    out["collapsed"] = any(r.get("collapsed", False) for r in runs)
    out["seeds"] = len(runs)
    return out


def _fashion_run(data, params):
    X_train, y_train, X_test, y_test = data
    Z_train, Z_test, facts = classification.train_and_embed(X_train, y_train, X_test, params)
    heads = classification.score_heads(Z_train, y_train, Z_test, y_test, ("knn", "logreg"),
                                       None)
    return {"knn_accuracy": heads["knn"]["accuracy"],
            "logreg_accuracy": heads["logreg"]["accuracy"],
            "best_accuracy": max(heads["knn"]["accuracy"], heads["logreg"]["accuracy"]),
            "macro_f1_best": max(h["macro_f1"] for h in heads.values()), **facts}


def _chosen(mode, options):
    s = SETTINGS[mode]
    table = variants()
    names = options.get("losses") or s["losses"] or tuple(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"losses must be among {list(table)}, got {unknown}")
    return {n: table[n] for n in names}, int(options.get("seeds") or s["seeds"])


def run(mode, options=None):
    options = options or {}
    s = SETTINGS[mode]
    chosen, n_seeds = _chosen(mode, options)
    fashion_cfg, omni_cfg = s["fashion"], s["omniglot"]
    fashion_data = classification.load_task(list(HARD_FIVE), fashion_cfg["train_n"],
                                            fashion_cfg["test_n"])
    O_train, o_train, O_eval, o_eval, omni_facts = retrieval.load(omni_cfg["max_classes"])
    fashion, omni = {}, {}
    for name, (loss, memory_size) in chosen.items():
        fashion_runs, omni_runs = [], []
        for seed in range(n_seeds):
            common = {"encoder": "small_cnn", "input_shape": (28, 28, 1), "random_state": seed,
                      "loss": loss, "memory_size": memory_size,
                      "learning_rate": options.get("learning_rate"),
                      "validation_fraction": s.get("validation"),
                      "verbose": options.get("verbose")}
            params = embedder_params(**common, epochs=fashion_cfg["epochs"])
            fashion_runs.append(_fashion_run(fashion_data, params))
            params = embedder_params(**common, epochs=omni_cfg["epochs"])
            omni_runs.append(retrieval.train_and_score(O_train, o_train, O_eval, o_eval,
                                                       params))
        fashion[name] = summarise(fashion_runs, FASHION_KEYS)
        omni[name] = summarise(omni_runs, OMNIGLOT_KEYS)
    ordered = dict(sorted(omni.items(), key=lambda item: -item[1]["map_at_r"]))
    return {
        "fashion_mnist_hard_5": {"n_train": int(len(fashion_data[1])),
                                 "n_test": int(len(fashion_data[3])),
                                 "epochs": fashion_cfg["epochs"], "results": fashion,
                                 "winner": _winner(fashion, "best_accuracy")},
        "omniglot_unseen": {**omni_facts, "epochs": omni_cfg["epochs"], "results": ordered,
                            "winner": _winner(omni, "map_at_r")},
        "seeds": n_seeds, "memory_size": MEMORY_SIZE,
        "recipe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in embedder_params(
            validation_fraction=s.get("validation")).items() if k not in ("loss", "margin")},
        "targets": [],
    }
