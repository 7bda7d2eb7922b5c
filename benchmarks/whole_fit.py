"""The whole ``TripletEmbedder.fit`` against the seed's eager loop, and bf16 accuracy.

Both are parts of :mod:`benchmarks.profile_step`'s results: the images/s of a whole fit
(tracing, validation and callbacks included) of the seed CNN at 112 px against the seed's
eager three-passes-per-triplet loop, and the hard-5 accuracy of one recipe trained in
float32 and in mixed bfloat16.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import Stopwatch, summary


def fit_vs_seed(f):
    """Images/s of the whole ``TripletEmbedder.fit`` (seed CNN, 112 px) vs the seed loop."""
    from benchmarks.common import embedder_params
    from benchmarks.throughput import _seed_loop
    from embedder import TripletEmbedder, build_encoder

    shape = (112, 112, 3)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(f["classes"]), f["per_class"])
    X = rng.integers(0, 256, (len(y), *shape), dtype=np.uint8)
    params = embedder_params(encoder="seed_cnn", input_shape=shape, epochs=f["epochs"],
                             random_state=0)
    seed = _seed_loop(build_encoder("seed_cnn", shape),
                      rng.uniform(0, 255, (8, *shape)).astype(np.float32), f["triplets"])
    seed(1)
    fit_rates, seed_rates, foreign = [], [], []
    n_fit = len(y) - int(round(params["validation_fraction"] * len(y)))
    for _ in range(f["rounds"]):
        with Stopwatch() as sw:
            TripletEmbedder(**params).fit(X, y)
        fit_rates.append(n_fit * f["epochs"] / sw.seconds)
        foreign.append(sw.foreign_cores)
        with Stopwatch() as sw:
            seed(f["triplets"])
        seed_rates.append(3 * f["triplets"] / sw.seconds)
        foreign.append(sw.foreign_cores)
    ratio = np.asarray(fit_rates) / np.asarray(seed_rates)
    return {**f, "images": int(len(y)), "fit_images_per_second": summary(fit_rates, 1),
            "seed_images_per_second": summary(seed_rates, 1), "ratio": summary(ratio, 3),
            "foreign_cores": [None if x is None else round(x, 2) for x in foreign],
            "note": "fit: training-side images x epochs / wall time of the whole fit (tracing, "
                    "validation and callbacks included); seed: 3 images per triplet"}


def bfloat16_accuracy(train_n=5000, test_n=2000, epochs=3, encoder="small_cnn"):
    """Hard-5 test accuracy of the same recipe trained in float32 and mixed_bfloat16."""
    from benchmarks.peer import load_data, register_peer_encoder, score
    from embedder import TripletEmbedder

    register_peer_encoder()
    X_train, y_train, X_test, y_test = load_data(train_n, test_n)
    out = {"encoder": encoder, "train_n": int(len(y_train)), "test_n": int(len(y_test)),
           "epochs": epochs}
    for precision in (None, "mixed_bfloat16"):
        est = TripletEmbedder(encoder=encoder, input_shape=(28, 28, 1), epochs=epochs,
                              precision=precision, random_state=0)
        with Stopwatch() as sw:
            est.fit(X_train, y_train)
        out[precision or "float32"] = {
            **score(est.transform(X_train), y_train, est.transform(X_test), y_test),
            "train_seconds": round(sw.seconds, 1),
            "foreign_cores": None if sw.foreign_cores is None else round(sw.foreign_cores, 2)}
    return out
