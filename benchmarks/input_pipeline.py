"""Benchmark 2: training images/s from image files on disk vs from an in-memory array.

The same model (the trainer's compiled in-batch model for ``small_cnn`` at 28x28x1, the
default loss) trains one epoch of P x K batches from
:func:`embedder.data.training_dataset` fed either the uint8 array or the paths of the same
Fashion-MNIST images written as PNG (and JPEG) files. Epochs of the variants alternate;
the first epoch of each is a warm-up (graph tracing, and it brings the files into the OS
page cache, as in any multi-epoch training run). Files whose decoded images fit in memory
are decoded once when the dataset is built (``embedder.data.image_pipeline.IN_GRAPH_MAX_BYTES``);
that one-time set-up is timed and reported beside the per-epoch rates.
"""

from __future__ import annotations

import os
import time

import numpy as np

from benchmarks.common import (
    Stopwatch,
    embedder_params,
    step_runner,
    summary,
    target,
    trainer_model,
)
from benchmarks.datasets import fashion_mnist, image_folder

SHAPE = (28, 28, 1)
SETTINGS = {
    "smoke": {"n_images": 120, "repeats": 1, "formats": ("png",), "eager": True},
    "quick": {"n_images": 2000, "repeats": 3, "formats": ("png",)},
    "full": {"n_images": 6000, "repeats": 5, "formats": ("png", "jpeg")},
}


def run(mode, options=None):
    s = SETTINGS[mode]
    options = options or {}
    X, y = fashion_mnist("train")
    X, y = X[: s["n_images"]], y[: s["n_images"]]
    sources = {"memory": X}
    for fmt in s["formats"]:  # JPEG at Pillow's default quality (75)
        sources[fmt] = image_folder(X, y, f"fashion-mnist-{fmt}", f".{fmt}")[0]
    loss = options.get("loss") or embedder_params()["loss"]
    runs, setup_seconds = _prepared_runs(sources, y, loss, compiled=not s.get("eager", False))
    rates = _interleaved_rates(runs, s["repeats"])
    ratios = {
        name: summary(np.asarray(rates[name]) / np.asarray(rates["memory"]), digits=3)
        for name in runs if name != "memory"
    }
    alone = {name: summary([_pipeline_rate(data, steps, batch)
                            for _ in range(s["repeats"])], 1)
             for name, (_, data, steps, batch) in runs.items()}
    disk = "png" if "png" in ratios else next(iter(ratios))
    _, _, steps, batch = runs["memory"]
    return {
        "encoder": "small_cnn", "input_shape": list(SHAPE), "loss": loss,
        "n_images": int(len(y)), "batch": batch, "steps_per_epoch": steps,
        "repeats": s["repeats"],
        "images_per_second": {name: summary(v, 1) for name, v in rates.items()},
        "ratio_to_memory": ratios,
        "pipeline_alone_images_per_second": alone,
        "setup_seconds": setup_seconds,
        "targets": [_target(disk, ratios[disk]["median"], setup_seconds, len(y),
                            alone[disk]["median"], np.median(rates["memory"]))],
    }


def _prepared_runs(sources, y, loss, compiled):
    """Per source: (step runner, dataset, steps, batch) after a warm-up epoch; set-up times."""
    import keras

    from embedder import build_encoder
    from embedder.data.image_pipeline import training_dataset
    from embedder.data.sampling import PKSampler

    keras.backend.clear_session()
    runs, setup_seconds = {}, {}
    for name, source in sources.items():
        sampler = PKSampler(y, None, 4, random_state=0)
        model = trainer_model(build_encoder("small_cnn", SHAPE), loss, SHAPE, n_classes=10,
                              compiled=compiled)
        with Stopwatch() as setup:  # files that fit in memory are decoded here, once
            data = training_dataset(source, y, sampler, SHAPE)
        setup_seconds[name] = round(setup.seconds, 3)
        steps = len(sampler)
        run = step_runner(model, data)
        run(steps)  # warm-up epoch
        runs[name] = (run, data, steps, sampler.classes_per_batch * sampler.samples_per_class)
    return runs, setup_seconds


def _interleaved_rates(runs, repeats):
    """Images/s of one epoch per source and round, the sources' order rotating per round."""
    rates = {name: [] for name in runs}
    for r in range(repeats):
        names = list(runs)[r % len(runs):] + list(runs)[: r % len(runs)]
        for name in names:
            run, _, steps, batch = runs[name]
            with Stopwatch() as sw:
                run(steps)
            rates[name].append(steps * batch / sw.seconds)
    return rates


def _target(disk, ratio, setup_seconds, n_images, feed, train):
    return target(
        f"training from {disk.upper()} files / from memory", ratio, 0.95,
        unit="x", note=f"epochs after the first; the one-time set-up (decoding the files "
        f"into memory when they fit) took {setup_seconds[disk]:g} s for {n_images} "
        f"{disk.upper()} files vs {setup_seconds['memory']:g} s from memory",
        if_missed=f"reading, decoding and resizing files runs on the same {os.cpu_count()} "
        f"cores as the training step: the {disk.upper()} pipeline alone delivers {feed:g} "
        f"images/s, {feed / train:.1f}x the {train:.0f} images/s of training from memory. "
        "Files whose decoded images exceed embedder.data.image_pipeline.IN_GRAPH_MAX_BYTES are "
        "read from disk every epoch, and that CPU time is missing from the step; with more "
        "cores or bigger images (where the model's share dominates) the ratio rises.")


def _pipeline_rate(data, steps, batch):
    """Images/s of iterating ``steps`` batches of the input pipeline, without training."""
    start = time.perf_counter()
    for _ in data.take(steps):
        pass
    return steps * batch / (time.perf_counter() - start)
