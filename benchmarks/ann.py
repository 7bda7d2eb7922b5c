"""Benchmark: the approximate kNN head against the exact one on large galleries.

Random clustered unit vectors, 128-d, shaped like a trained embedding: classes come in
groups of 10 similar ones (class centres 0.35 from their group's centre, groups random),
100 gallery images per class, noise 0.07 per coordinate, so exact kNN confuses some
images within a group. Both ``make_head("knn")`` (exact, brute force) and
``make_head("knn", algorithm="ann")`` (faiss inverted-file index) are fitted on the same
gallery and predict the same fresh queries; reported: the share of queries where both
predict the same class (target >= 0.98), each head's accuracy, the ANN index build time
and each head's query throughput (target: ANN >= 5x exact at 1M images). Modes:
``smoke`` 10k, ``quick`` 100k, ``full`` 100k + 1M images.

Pure isotropic noise with no cluster structure is the hard case for any inverted-file
index: with noise 0.15 per coordinate and no groups, 100k images, 16 probes, the heads
agreed on 0.93 of the queries (exact accuracy 0.96), at 2.2x the exact throughput.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import Stopwatch, target

DIM = 128
PER_CLASS = 100
PER_GROUP = 10
SPREAD = 0.35
NOISE = 0.07
N_QUERIES = 2000
SIZES = {"smoke": (10_000,), "quick": (100_000,), "full": (100_000, 1_000_000)}


def clustered_unit_vectors(n, n_classes, *, seed=0, chunk=100_000):
    """``n`` float32 unit vectors around ``n_classes`` grouped centres, and their labels."""
    rng = np.random.default_rng(seed)

    def unit(rows):
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    groups = unit(rng.normal(size=(max(1, n_classes // PER_GROUP), DIM)))
    centres = np.repeat(groups, PER_GROUP, axis=0)[:n_classes]
    centres = unit(centres + SPREAD * unit(rng.normal(size=(len(centres), DIM))))
    centres = centres.astype(np.float32)
    y = rng.integers(0, n_classes, size=n)
    X = np.empty((n, DIM), np.float32)
    for start in range(0, n, chunk):  # float32 chunks keep peak memory near the output
        part = slice(start, start + chunk)
        X[part] = centres[y[part]] + NOISE * rng.standard_normal(
            (len(X[part]), DIM), dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, y


def compare(n, *, n_queries=N_QUERIES, seed=0):
    """Fit both heads on ``n`` gallery vectors; agreement, accuracy, timings."""
    from classifiers import make_head

    n_classes = max(2, n // PER_CLASS)
    X, y = clustered_unit_vectors(n + n_queries, n_classes, seed=seed)
    X_query, y_query, X, y = X[:n_queries], y[:n_queries], X[n_queries:], y[n_queries:]
    exact = make_head("knn").fit(X, y)
    with Stopwatch() as exact_time:
        exact_pred = exact.predict(X_query)
    del exact
    ann = make_head("knn", algorithm="ann")
    with Stopwatch() as build:
        ann.fit(X, y)
    with Stopwatch() as ann_time:
        ann_pred = ann.predict(X_query)
    return {
        "gallery": n, "classes": n_classes, "queries": n_queries,
        "n_lists": int(ann.transformer_.n_lists_), "n_probe": int(ann.n_probe),
        "agreement": round(float(np.mean(ann_pred == exact_pred)), 4),
        "exact_accuracy": round(float(np.mean(exact_pred == y_query)), 4),
        "ann_accuracy": round(float(np.mean(ann_pred == y_query)), 4),
        "ann_build_seconds": round(build.seconds, 2),
        "exact_queries_per_second": round(n_queries / exact_time.seconds, 1),
        "ann_queries_per_second": round(n_queries / ann_time.seconds, 1),
        "speedup": round(exact_time.seconds / ann_time.seconds, 2),
        "foreign_cores": exact_time.foreign_cores,
    }


def run(mode, options=None):
    """Results dict for ``benchmarks.run`` (mode: smoke, quick or full)."""
    results = {f"{n:_}": compare(n) for n in SIZES[mode]}
    largest = results[f"{max(SIZES[mode]):_}"]
    return {
        "dim": DIM, "images_per_class": PER_CLASS, "classes_per_group": PER_GROUP,
        "spread": SPREAD, "noise": NOISE, "sizes": results,
        "targets": [
            target(f"ANN/exact prediction agreement at {largest['gallery']:,}",
                   largest["agreement"], 0.98),
            target(f"ANN query throughput / exact at {largest['gallery']:,}",
                   largest["speedup"], 5.0, unit="x",
                   note="the issue's target is set at 1M images (full mode)"),
        ],
    }


if __name__ == "__main__":  # python -m benchmarks.ann [smoke|quick|full]
    import json
    import sys

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "quick"), indent=1))
