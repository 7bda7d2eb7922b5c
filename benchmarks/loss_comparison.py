"""Benchmark 6: every registered loss, with and without cross-batch memory, same budget.

Each variant (a loss of :data:`embedder.losses.LOSSES` at its registered defaults, plus
``+xbm`` variants of pair losses with ``memory_size``) is trained with the same recipe
(``TripletEmbedder`` defaults, the same encoder per data set, P x K sampler and epochs,
no validation split) and several seeds on three tasks:

- Omniglot, unseen-character retrieval (P@1, MAP@R) at ``omniglot.size`` px, as in
  :mod:`benchmarks.retrieval`;
- Fashion-MNIST, the hard five classes (a stratified subsample of the train split),
  scored by kNN and logistic regression on the test split;
- the flowers photos (5 classes, stratified 80/20 split, seed 0, as in
  :mod:`benchmarks.photos`) at ``flowers.size`` px with the default encoder, scored the
  same way.

Each score is the mean over the seeds, with its standard deviation beside it
(``<score>_std``); the variants are ordered by Omniglot MAP@R and each task's winner is
reported with its lead and the seeds' spread, so a default changes only where the lead
is larger than the spread. Training time is the mean per fit on each task. An
offline-triplet epoch runs as many steps as an in-batch epoch but forwards three images
per triplet. ``options["losses"]`` restricts the variants and ``options["seeds"]`` the
number of seeds (a smaller run states so in its record).

The full protocol takes about an hour on 2 cores, so each finished variant is appended
to ``results/loss_comparison_runs.jsonl`` with the settings it ran under; a later full
run with the same settings and code reuses those lines (``options["resume"]``) instead
of training them again, and says which it reused.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from benchmarks import classification, photos, retrieval
from benchmarks.common import DataUnavailable, embedder_params, machine_info
from benchmarks.datasets import HARD_FIVE

#: Pair losses that also run with a cross-batch memory of this many rows (``+xbm``).
MEMORY_LOSSES = ("batch_hard", "multi_similarity", "supervised_contrastive")
MEMORY_SIZE = 1024
PROGRESS = Path(__file__).parent / "results" / "loss_comparison_runs.jsonl"
TASKS = ("omniglot", "fashion", "flowers")


def variants():
    """``{variant: (loss, memory_size)}``: every registered loss, then the memory ones."""
    from embedder.losses import LOSSES

    out = {name: (name, 0) for name in LOSSES}
    out.update({f"{name}+xbm": (name, MEMORY_SIZE) for name in MEMORY_LOSSES if name in LOSSES})
    return out


SETTINGS = {
    "smoke": {"omniglot": {"max_classes": 12, "size": 28, "epochs": 1},
              "fashion": {"train_n": 160, "test_n": 100, "epochs": 1},
              "flowers": {"per_class": 12, "size": 32, "epochs": 1}, "seeds": 1,
              "losses": ("batch_all", "triplet", "arcface", "multi_similarity+xbm")},
    "quick": {"omniglot": {"max_classes": None, "size": 28, "epochs": 2},
              "fashion": {"train_n": 1000, "test_n": 1000, "epochs": 2},
              "flowers": {"per_class": 120, "size": 48, "epochs": 2}, "seeds": 3,
              "losses": None},
    "full": {"omniglot": {"max_classes": None, "size": 56, "epochs": 6},
             "fashion": {"train_n": 4000, "test_n": None, "epochs": 5},
             "flowers": {"per_class": None, "size": 64, "epochs": 5}, "seeds": 3,
             "losses": None},
}
HEAD_KEYS = ("knn_accuracy", "logreg_accuracy", "best_accuracy", "macro_f1_best",
             "train_seconds", "epochs_run")
OMNIGLOT_KEYS = ("precision_at_1", "r_precision", "map_at_r", "train_seconds", "epochs_run")
RANKING = {"omniglot": "map_at_r", "fashion": "best_accuracy", "flowers": "best_accuracy"}


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


def _head_run(data, params):
    """Train on ``data`` (train/test split); kNN and logistic-regression test scores."""
    X_train, y_train, X_test, y_test = data
    Z_train, Z_test, facts = classification.train_and_embed(X_train, y_train, X_test, params)
    heads = classification.score_heads(Z_train, y_train, Z_test, y_test, ("knn", "logreg"),
                                       None)
    return {"knn_accuracy": heads["knn"]["accuracy"],
            "logreg_accuracy": heads["logreg"]["accuracy"],
            "best_accuracy": max(heads["knn"]["accuracy"], heads["logreg"]["accuracy"]),
            "macro_f1_best": max(h["macro_f1"] for h in heads.values()), **facts}


def _load(s):
    """``{task: (data, shape, facts)}``; flowers only where its photos can be read."""
    o, f, p = s["omniglot"], s["fashion"], s["flowers"]
    shape = (o["size"], o["size"], 1)
    *omni, omni_facts = retrieval.load(o["max_classes"], shape)
    tasks = {"omniglot": (tuple(omni), shape, omni_facts)}
    fashion = classification.load_task(list(HARD_FIVE), f["train_n"], f["test_n"])
    tasks["fashion"] = (fashion, (28, 28, 1), {"n_train": int(len(fashion[1])),
                                               "n_test": int(len(fashion[3]))})
    try:
        flowers = photos.load_split(p["size"], p["per_class"])
    except DataUnavailable as exc:
        tasks["flowers"] = (None, None, {"unavailable": str(exc)})
    else:
        tasks["flowers"] = (flowers, (p["size"], p["size"], 3),
                            {"n_train": int(len(flowers[1])), "n_test": int(len(flowers[3]))})
    return tasks


def _variant(tasks, s, loss, memory_size, n_seeds, options):
    """``{task: summary over seeds}`` of one variant on every available task."""
    out = {}
    for task, (data, shape, _facts) in tasks.items():
        if data is None:
            continue
        runs = []
        for seed in range(n_seeds):
            # small_cnn on the grey tasks (the protocol's encoder); the default encoder
            # (the user's seed_cnn) on the photos
            params = embedder_params(
                encoder="small_cnn" if shape[-1] == 1 else None, input_shape=shape,
                random_state=seed, loss=loss, memory_size=memory_size,
                epochs=s[task]["epochs"], learning_rate=options.get("learning_rate"),
                validation_fraction=0.0, verbose=options.get("verbose"))
            runs.append(retrieval.train_and_score(*data, params) if task == "omniglot"
                        else _head_run(data, params))
        out[task] = summarise(runs, OMNIGLOT_KEYS if task == "omniglot" else HEAD_KEYS)
    return out


def _key(mode, s, name, n_seeds, commit):
    """What a saved variant must match to be reused: settings, variant, seeds, code."""
    return {"mode": mode, "settings": {t: s[t] for t in TASKS}, "variant": name,
            "seeds": n_seeds, "git_commit": commit}


def _saved(key):
    if not PROGRESS.exists():
        return None
    for line in PROGRESS.read_text().splitlines():
        record = json.loads(line)
        if {k: record.get(k) for k in key} == key:
            return record["results"]
    return None


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
    tasks = _load(s)
    results, reused = {task: {} for task in TASKS}, []
    commit = machine_info()["git_commit"]
    for name, (loss, memory_size) in chosen.items():
        key = _key(mode, s, name, n_seeds, commit)
        summary = _saved(key) if options.get("resume") else None
        if summary is None:
            started = time.perf_counter()
            summary = _variant(tasks, s, loss, memory_size, n_seeds, options)
            if mode == "full":  # an append-only log, one line per finished variant
                PROGRESS.parent.mkdir(parents=True, exist_ok=True)
                with open(PROGRESS, "a") as f:
                    f.write(json.dumps({**key, "results": summary, "wall": round(
                        time.perf_counter() - started, 1)}) + "\n")
        else:
            reused.append(name)
        for task, row in summary.items():
            results[task][name] = row
    order = sorted(results["omniglot"], key=lambda n: -results["omniglot"][n]["map_at_r"])
    return {
        "tasks": {task: {**tasks[task][2], **s[task], "results": {
            n: results[task][n] for n in order if n in results[task]},
            **({"winner": _winner(results[task], RANKING[task])} if results[task] else {})}
            for task in TASKS},
        "order": order, "seeds": n_seeds, "memory_size": MEMORY_SIZE, "reused": reused,
        "recipe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in embedder_params(
            validation_fraction=0.0).items() if k not in ("loss", "margin", "input_shape")},
        "targets": [],
    }
