"""Where the training step's time goes, and how close it runs to the CPU's peak.

For each configuration (``small_cnn`` at 28x28x1 with the default P x K batch, the peer
network of :mod:`benchmarks.peer` with 5 x 25), nested parts of the step are timed on
one in-memory batch, interleaved (each round runs every part once, in a rotated order):

- ``forward``: the encoder in training mode (batch-norm batch statistics);
- ``forward_backward``: plus the gradients of a trivial loss (the embeddings' dot product
  with a fixed vector: no triplet work), not applied;
- ``forward_backward_adam``: plus Adam's update;
- ``loss_step``: the same with the triplet loss (``embedder.losses.get_loss``) instead
  of the trivial one, no diagnostics;
- ``trainer_step``: the compiled step that ``fit`` runs (from
  :func:`embedder.training.build_training_run`): loss, training diagnostics, metrics;
- ``fed_trainer_step``: that step fed by the training ``tf.data`` pipeline from the
  in-memory array, as in ``fit``;
- ``cross_entropy_step``: the encoder plus a softmax head, sparse cross-entropy.

Differences of nested parts give the breakdown (backward = forward_backward - forward,
and so on). The forward FLOPs per image are counted from the model's layers (2 x the
multiply-adds of every Conv2D and Dense; batch norm, ReLU and pooling are not counted),
x3 for a training step (forward, gradients of activations and of weights), and set
against the CPU's peak. The same parts also run with encoders built under the
``mixed_bfloat16`` policy, interleaved with float32; and the whole ``TripletEmbedder.fit``
of the seed CNN at 112 px is set against the seed's eager per-triplet loop.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from benchmarks.common import Stopwatch, summary, target

SETTINGS = {
    "smoke": {"configs": [("small_cnn", (16, 16, 1), 4, 2)], "rounds": 1, "min_seconds": 0.0,
              "precisions": ("float32",), "fit_vs_seed": None},
    "quick": {"configs": [("small_cnn", (28, 28, 1), 16, 4), ("peer_cnn", (28, 28, 1), 5, 25)],
              "rounds": 3, "min_seconds": 0.3, "precisions": ("float32", "mixed_bfloat16"),
              "fit_vs_seed": {"classes": 8, "per_class": 24, "epochs": 3, "triplets": 10,
                              "rounds": 1}},
    "full": {"configs": [("small_cnn", (28, 28, 1), 16, 4), ("peer_cnn", (28, 28, 1), 5, 25)],
             "rounds": 7, "min_seconds": 1.0, "precisions": ("float32", "mixed_bfloat16"),
             "fit_vs_seed": {"classes": 16, "per_class": 40, "epochs": 3, "triplets": 30,
                             "rounds": 3}},
}
PARTS = ("forward", "forward_backward", "forward_backward_adam", "loss_step", "trainer_step",
         "fed_trainer_step", "cross_entropy_step")
#: (label, part, minus part): the breakdown of the trainer's step, fed as in ``fit``.
BREAKDOWN = (
    ("forward", "forward", None),
    ("backward", "forward_backward", "forward"),
    ("optimizer (Adam)", "forward_backward_adam", "forward_backward"),
    ("triplet loss", "loss_step", "forward_backward_adam"),
    ("diagnostics + Keras step overhead", "trainer_step", "loss_step"),
    ("data feeding (tf.data from memory)", "fed_trainer_step", "trainer_step"),
)
#: FMA units per core and float32 lanes per unit assumed for the peak (AVX-512).
FMA_UNITS, LANES = 2, 16


# ---------------------------------------------------------------- FLOPs and peak


def forward_macs(model, input_shape):
    """Multiply-adds per image of the Conv2D and Dense layers of a chain-shaped model.

    Shapes are propagated layer by layer with ``compute_output_shape`` from a batch of
    one ``input_shape`` image; nested models are walked into.
    """
    import keras

    def walk(layer, shape):
        if isinstance(layer, keras.Model):
            macs = 0
            for inner in layer.layers:
                if isinstance(inner, keras.layers.InputLayer):
                    continue
                m, shape = walk(inner, shape)
                macs += m
            return macs, shape
        out = tuple(layer.compute_output_shape(shape))
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            return int(np.prod(out[1:]) * kh * kw * shape[-1] // layer.groups), out
        if isinstance(layer, keras.layers.Dense):
            return int(np.prod(out[1:]) * shape[-1]), out
        return 0, out

    return walk(model, (1, *input_shape))[0]


def cpu_clock_ghz():
    """The clock of the first CPU in ``/proc/cpuinfo`` (GHz), or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1]) / 1000
    except (OSError, ValueError):
        pass
    return None


def peak_gflops(cores=None, ghz=None):
    """float32 peak: cores x FMA units x 16 lanes x 2 flops x GHz, and its assumptions."""
    cores = cores or len(os.sched_getaffinity(0))
    ghz = ghz or cpu_clock_ghz()
    peak = None if ghz is None else cores * FMA_UNITS * LANES * 2 * ghz
    return {"cores": cores, "clock_ghz": ghz, "fma_units_per_core": FMA_UNITS,
            "float32_lanes": LANES, "peak_gflops": None if peak is None else round(peak, 1),
            "assumption": f"{cores} cores x {FMA_UNITS} FMA units x {LANES} float32 lanes "
                          "(AVX-512) x 2 flops per FMA x the /proc/cpuinfo clock. An AMD Zen 4 "
                          "(EPYC family 25) executes a 512-bit FMA as two 256-bit halves, so "
                          "its sustained peak is half of this; the clock is the nominal one "
                          "the hypervisor reports, not a measured boost clock."}


# ---------------------------------------------------------------- the parts


def _build(name, shape, precision):
    from embedder import build_encoder

    if name == "peer_cnn":
        from benchmarks.peer import register_peer_encoder

        register_peer_encoder()
    from embedder.training.run import dtype_policy

    with dtype_policy(precision):
        return build_encoder(name, shape)


def _synced(fn):
    """``run(n)``: ``n`` calls of ``fn``, then read a result back (the work is done)."""
    def run(n):
        out = None
        for _ in range(n):
            out = fn()
        if out is not None:
            np.asarray(out)

    return run


def _raw_steps(encoder, images, labels, loss_fn):
    """Forward, forward+backward, +Adam and the loss step as compiled functions."""
    import keras
    import tensorflow as tf

    weights = encoder.trainable_variables
    probe = tf.constant(np.random.default_rng(0).normal(size=encoder.output_shape[-1]),
                        tf.float32)

    def trivial(z):
        return tf.reduce_mean(tf.linalg.matvec(tf.cast(z, tf.float32), probe))

    def grads_of(loss):
        with tf.GradientTape() as tape:
            value = loss(encoder(images, training=True))
        return value, tape.gradient(value, weights)

    adam, adam2 = keras.optimizers.Adam(1e-4), keras.optimizers.Adam(1e-4)
    adam.build(weights)
    adam2.build(weights)

    @tf.function
    def forward():
        return tf.reduce_sum(encoder(images, training=True))

    @tf.function
    def forward_backward():
        value, grads = grads_of(trivial)
        return value + tf.add_n([tf.reduce_sum(g) for g in grads]) * 0.0

    @tf.function
    def forward_backward_adam():
        value, grads = grads_of(trivial)
        adam.apply(grads, weights)
        return value

    @tf.function
    def loss_step():
        value, grads = grads_of(lambda z: loss_fn(labels, z))
        adam2.apply(grads, weights)
        return value

    return {"forward": _synced(forward), "forward_backward": _synced(forward_backward),
            "forward_backward_adam": _synced(forward_backward_adam),
            "loss_step": _synced(loss_step)}


def _trainer_steps(name, shape, precision, images, labels, p, k):
    """The compiled ``fit`` step on one batch and fed by its pipeline, and cross-entropy."""
    import keras

    from benchmarks.common import batch_runner, step_runner
    from embedder.training.config import TrainingConfig
    from embedder.training.run import build_training_run

    y = np.repeat(np.arange(p), 12 * k)  # 12 steps per epoch: compiled, as for users
    X = np.random.default_rng(1).integers(0, 256, (len(y), *shape), dtype=np.uint8)
    config = TrainingConfig(classes_per_batch=p, samples_per_class=k, epochs=1,
                            validation_fraction=0.0, random_state=0)
    # one model for both: train_on_batch and the fed loop call the same compiled step
    run = build_training_run(_build(name, shape, precision), X, y, config, input_shape=shape)
    encoder = _build(name, shape, precision)
    inputs = keras.Input(shape=shape)
    ce = keras.Model(inputs, keras.layers.Dense(p, activation="softmax", dtype="float32")(
        encoder(inputs)))
    ce.compile(optimizer=keras.optimizers.Adam(1e-4),
               loss=keras.losses.SparseCategoricalCrossentropy())
    return {"trainer_step": batch_runner(run.model, images, labels),
            "fed_trainer_step": step_runner(run.model, run.dataset),
            "cross_entropy_step": batch_runner(ce, images, labels)}


def parts(name, shape, p, k, precision):
    """``{part: run(n)}`` for one encoder configuration and dtype policy."""
    import tensorflow as tf

    from embedder.losses import get_loss

    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (p * k, *shape)).astype(np.float32))
    labels = tf.constant(np.repeat(np.arange(p), k).astype(np.int32))
    out = _raw_steps(_build(name, shape, precision), images, labels, get_loss("batch_all"))
    out.update(_trainer_steps(name, shape, precision, images, labels, p, k))
    return out


# ---------------------------------------------------------------- timing


def _calibrate(run, min_seconds):
    """Steps per repetition so one repetition lasts about ``min_seconds`` (at least 1)."""
    run(1)  # traces
    with Stopwatch() as sw:
        run(2)
    return max(1, int(np.ceil(min_seconds / max(sw.seconds / 2, 1e-6))))


def measure(variants, rounds, min_seconds):
    """Wall seconds, CPU seconds (this process) per step and foreign load, interleaved."""
    steps = {key: _calibrate(run, min_seconds) for key, run in variants.items()}
    keys = list(variants)
    seconds, cpu, foreign = ({key: [] for key in keys} for _ in range(3))
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[: r % len(keys)]:
            with Stopwatch() as sw:
                variants[key](steps[key])
            seconds[key].append(sw.seconds / steps[key])
            cpu[key].append(sw.seconds * sw.own_cores / steps[key])
            foreign[key].append(sw.foreign_cores)
    return seconds, cpu, foreign, steps


def breakdown(ms):
    """Milliseconds of each part of the fed trainer step (differences of nested parts)."""
    rows = []
    for label, part, minus in BREAKDOWN:
        value = ms[part] - (ms[minus] if minus else 0.0)
        rows.append({"part": label, "ms": round(value, 2),
                     "share": round(value / ms["fed_trainer_step"], 3)})
    return rows


#: (part, forward-FLOP multiple): a training step does the forward FLOPs about three times.
FLOP_FACTORS = (("forward", 1), ("forward_backward", 3), ("trainer_step", 3),
                ("fed_trainer_step", 3))


def derive(entry, macs, batch):
    """Breakdown, images/s and GFLOP/s of one precision's timings (``entry`` updated).

    The breakdown uses each part's median CPU time of this process (all its threads):
    on a machine shared with other busy processes, wall time swings with their load
    (medians of nested parts then come out in the wrong order) while CPU time tracks
    the work itself. Achieved GFLOP/s is given per wall second of the fastest
    repetition (what this run reached) and per CPU second (per busy core, against the
    peak of one core).
    """
    cpu = {part: entry["cpu_ms_per_step"][part]["median"] for part in PARTS}
    fastest = entry["fastest_ms_per_step"]
    entry["breakdown"] = breakdown(cpu)
    entry["images_per_second"] = {part: round(batch / fastest[part] * 1000, 1)
                                  for part in PARTS}
    entry["achieved_gflops"] = {part: round(f * 2 * macs * batch / fastest[part] / 1e6, 1)
                                for part, f in FLOP_FACTORS}
    entry["gflops_per_cpu_second"] = {part: round(f * 2 * macs * batch / cpu[part] / 1e6, 1)
                                      for part, f in FLOP_FACTORS}
    return entry


def profile_config(name, shape, p, k, s):
    """Breakdown, GFLOP/s and bfloat16 comparison of one encoder configuration."""
    import keras

    keras.backend.clear_session()
    variants = {}
    for precision in s["precisions"]:
        for part, run in parts(name, shape, p, k, precision).items():
            variants[(precision, part)] = run
    seconds, cpu, foreign, steps = measure(variants, s["rounds"], s["min_seconds"])
    macs = forward_macs(_build(name, shape, "float32"), shape)
    batch = p * k
    result = {"encoder": name, "input_shape": list(shape), "batch": f"{p} x {k} = {batch}",
              "forward_mflops_per_image": round(2 * macs / 1e6, 2), "precisions": {}}
    for precision in s["precisions"]:
        ms = {part: 1000 * float(np.min(seconds[(precision, part)])) for part in PARTS}
        result["precisions"][precision] = {
            "ms_per_step": {part: summary(np.asarray(seconds[(precision, part)]) * 1000, 2)
                            for part in PARTS},
            "fastest_ms_per_step": {part: round(ms[part], 2) for part in PARTS},
            "cpu_ms_per_step": {part: summary(np.asarray(cpu[(precision, part)]) * 1000, 2)
                                for part in PARTS},
            "steps_per_repetition": {part: steps[(precision, part)] for part in PARTS},
            "foreign_cores": {part: [None if f is None else round(f, 2)
                                     for f in foreign[(precision, part)]] for part in PARTS},
        }
        derive(result["precisions"][precision], macs, batch)
    if "mixed_bfloat16" in result["precisions"]:
        for part in ("trainer_step", "fed_trainer_step"):
            ratio = (np.asarray(seconds[("float32", part)])
                     / np.asarray(seconds[("mixed_bfloat16", part)]))
            result[f"bfloat16_speedup_{part}"] = summary(ratio, 3)
        result["bfloat16_speedup_fastest"] = round(
            float(np.min(seconds[("float32", "fed_trainer_step")])
                  / np.min(seconds[("mixed_bfloat16", "fed_trainer_step")])), 3)
    return result


def summarise(out):
    """Fractions of the peak and the targets of a result (``out`` updated and returned)."""
    peak, out["targets"] = out["peak"], []
    for c in out["configs"]:
        f32 = c["precisions"]["float32"]
        if peak["peak_gflops"]:
            c["fraction_of_peak_fed_step"] = round(
                f32["achieved_gflops"]["fed_trainer_step"] / peak["peak_gflops"], 3)
            c["fraction_of_core_peak_per_cpu_second"] = round(
                f32["gflops_per_cpu_second"]["fed_trainer_step"]
                / (peak["peak_gflops"] / peak["cores"]), 3)
        cpu = f32["cpu_ms_per_step"]
        out["targets"].append(target(
            f"{c['encoder']} in-batch step / cross-entropy step",
            cpu["cross_entropy_step"]["median"] / cpu["trainer_step"]["median"], 0.97,
            unit="x", note="speed ratio from median CPU ms per step, one in-memory batch"))
    f = out.get("fit_vs_seed")
    if f:
        out["targets"].append(target(
            "whole TripletEmbedder.fit (seed CNN, 112 px) / seed eager loop",
            f["ratio"]["median"], 20, unit="x",
            note=f"{f['images']} random images, {f['rounds']} round(s)",
            if_missed="the whole fit includes graph tracing, per-epoch validation and "
            "callbacks, which weigh heavily on a small image set; both sides ran on a "
            "machine other processes kept busy"))
    return out


def run(mode, options=None):
    from benchmarks.whole_fit import bfloat16_accuracy, fit_vs_seed

    s = SETTINGS[mode]
    configs = [profile_config(name, shape, p, k, s) for name, shape, p, k in s["configs"]]
    out = {"settings": {k: v for k, v in s.items() if k != "configs"}, "peak": peak_gflops(),
           "configs": configs}
    if s["fit_vs_seed"]:
        out["fit_vs_seed"] = fit_vs_seed(s["fit_vs_seed"])
    if mode == "full":
        out["bfloat16_accuracy"] = bfloat16_accuracy()
    return summarise(out)
