"""The ``tf.data`` pipelines that feed encoders: inference batches and training batches.

Pixels are float32 on the 0..255 scale; the pipelines only bring every image of a batch to
``input_shape`` (resizing to the backbone happens inside encoders). Files are decoded in
parallel by :mod:`embedder.data.decoding`. Inference streams them batch by batch; training
decodes them once into memory when the decoded images take at most
``IN_GRAPH_MAX_BYTES``, and otherwise streams them from disk every epoch. A file that
cannot be decoded stops a pipeline with a TensorFlow error naming it; iterate inside
:func:`embedder.data.decoding.decode_errors` (or through :func:`iterate_batches`) to get a
``ValueError`` instead::

    from embedder.data.decoding import decode_errors

    with decode_errors():
        model.fit(training_dataset(paths, y, sampler, input_shape), ...)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from embedder.checks import check_existing_files, check_images, column_labels, is_paths
from embedder.data.augmentation import build_augmenter
from embedder.data.decoding import (
    TF_EXTENSIONS,
    assert_decoded,
    decode_errors,
    decode_file,
    fit_to_shape,
)
from embedder.models.preprocessing import check_input_shape

__all__ = [
    "decode_all", "decoded_in_memory", "image_batches", "iterate_batches",
    "offline_triplet_dataset", "training_dataset",
]

AUTOTUNE = tf.data.AUTOTUNE


def _without_autotune_thread(ds):
    """``ds`` with tf.data's autotuning model switched off (parallel maps use one call per
    core, prefetch buffers grow on their own).

    The autotuning thread sleeps on a timer that deleting the iterator does not cut short
    (TF 2.21): at the end of a long ``fit`` the main thread waited for it to wake, 33-37 s
    after a ~50 s fit (3 of 5 two-epoch peer runs; none of 5 with it off, at the same
    throughput). Measured in ``benchmarks/results/teardown.jsonl``.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def _as_paths(X, name="X"):
    """``X`` as a list of existing file paths, or ``None`` if it is not paths (an array)."""
    if not is_paths(X):
        return None
    values = X.tolist() if hasattr(X, "tolist") else X
    return check_existing_files([os.fspath(p) for p in values], name)


def _decoded_batches(index_batches, paths, input_shape):
    """Map a dataset of int64 index vectors to ``(images, indices)`` decoded from ``paths``.

    Each batch is decoded in parallel with errors dropped (``ignore_errors``); a sentinel
    element then reveals any dropped image, and :func:`~embedder.data.decoding.assert_decoded`
    names the first such file.
    """
    paths_t = tf.constant(paths, dtype=tf.string)
    use_tf = [Path(p).suffix.lower() in TF_EXTENSIONS for p in paths]
    use_tf = all(use_tf) if len(set(use_tf)) < 2 else tf.constant(use_tf)
    sentinel = (tf.constant(-1, tf.int64), tf.zeros(input_shape, tf.float32))

    def decode(i):
        flag = use_tf if isinstance(use_tf, bool) else use_tf[i]
        return i, fit_to_shape(decode_file(paths_t[i], flag, input_shape[2]), input_shape)

    def check(got, images, expected):
        got = tf.concat([got[:-1], -tf.ones_like(expected)], 0)[: tf.size(expected)]
        wrong = tf.not_equal(got, expected)
        first = tf.argmax(tf.cast(wrong, tf.int32))
        assert_decoded(tf.logical_not(tf.reduce_any(wrong)), paths_t[expected[first]])
        return tf.ensure_shape(images[:-1], (None, *input_shape)), expected

    def one_batch(indices):
        decoded = tf.data.Dataset.from_tensor_slices(indices).map(decode, AUTOTUNE)
        decoded = decoded.ignore_errors().concatenate(tf.data.Dataset.from_tensors(sentinel))
        batch = decoded.batch(tf.size(indices, tf.int64) + 1)
        return batch.map(lambda got, images: check(got, images, indices))

    return index_batches.flat_map(one_batch)


def iterate_batches(dataset):
    """Iterate ``dataset`` as NumPy arrays inside :func:`~embedder.data.decoding.decode_errors`.

    Parameters
    ----------
    dataset : tf.data.Dataset
        A pipeline of this module.

    Yields
    ------
    numpy.ndarray or tuple of numpy.ndarray
        One element of ``dataset``.
    """
    with decode_errors():
        yield from dataset.as_numpy_iterator()


# ------------------------------------------------------------------------ pipelines
def image_batches(X, input_shape, batch_size=256):
    """Float32 batches ``(b, *input_shape)`` of ``X`` in order, for inference.

    ``X`` is a 4-D array (sliced batch by batch, so memory stays bounded) or a 1-D array /
    list of image paths (decoded in parallel, prefetched). Iterate inside
    :func:`~embedder.data.decoding.decode_errors` to get a ``ValueError`` naming an
    undecodable file.
    """
    shape = check_input_shape(input_shape)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    paths = _as_paths(X)
    if paths is not None:
        starts = tf.data.Dataset.range(0, len(paths), batch_size)
        ranges = starts.map(lambda s: tf.range(s, tf.minimum(s + batch_size, len(paths))))
        ds = _decoded_batches(ranges, paths, shape).map(lambda images, _: images)
    else:
        X = check_images(X)

        def slices():
            for start in range(0, len(X), batch_size):
                yield X[start : start + batch_size]

        spec = tf.TensorSpec((None, *X.shape[1:]), tf.as_dtype(X.dtype))
        ds = tf.data.Dataset.from_generator(slices, output_signature=spec)
        ds = ds.map(lambda b: fit_to_shape(b, shape), AUTOTUNE)
    # a known length: Keras's predict() warns "ran out of data" on unknown cardinality
    n_batches = -(-len(X) // batch_size)
    ds = ds.apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(AUTOTUNE)
    return _without_autotune_thread(ds)


def _encode_labels(y, n):
    y = column_labels(y)
    if len(y) != n:
        raise ValueError(f"y must have shape ({n},) to match X, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        y = np.unique(y, return_inverse=True)[1]
    return y.astype(np.int32)


#: In-memory images up to this size are gathered inside the ``tf.data`` graph (no Python,
#: no GIL between steps); larger arrays are copied batch by batch through NumPy instead, so
#: TensorFlow never holds a second copy of a huge array.
IN_GRAPH_MAX_BYTES = 1 << 30


def _gather_dataset(X, index_batches, input_shape):
    """Images for a dataset of index vectors: gathered from memory or decoded from paths."""
    shape = check_input_shape(input_shape)
    # Decoded once instead of once per epoch: decoding PNGs every epoch cost 16% of the
    # training rate (benchmarks/input_pipeline.py); a bad file now fails here.
    X = decoded_in_memory(X, shape)
    paths = _as_paths(X)
    if paths is not None:  # too large for memory: decoded again every epoch
        return _decoded_batches(index_batches, paths, shape)
    X = check_images(X)
    if X.nbytes <= IN_GRAPH_MAX_BYTES:
        # A numpy_function per batch held the GIL and left a core idle between steps.
        images_t = tf.constant(X)

        def take(idx):
            return fit_to_shape(tf.gather(images_t, idx), shape), idx

        return index_batches.map(take, AUTOTUNE)

    def gather(idx):  # a host-side copy of only the P*K images of one batch
        return X[idx]

    def lookup(idx):
        images = tf.numpy_function(gather, [idx], tf.as_dtype(X.dtype))
        images = tf.ensure_shape(images, (None, *X.shape[1:]))
        return fit_to_shape(images, shape), idx

    return index_batches.map(lookup, AUTOTUNE)


def decoded_in_memory(X, input_shape, max_bytes=IN_GRAPH_MAX_BYTES):
    """``X`` with image paths decoded once to one float32 array when that fits.

    Training, validation after every epoch and the folds of a cross-validation read the
    same images many times; decoding them once saves a decode per read.

    Parameters
    ----------
    X : ndarray or 1-D array-like of image paths
        Images; arrays are returned as they are.
    input_shape : tuple of 3 ints
        Shape the paths are decoded to.
    max_bytes : int, default=IN_GRAPH_MAX_BYTES
        Paths whose decoded images would take more than this stay paths.

    Returns
    -------
    ndarray or list of str
        ``decode_all(paths, input_shape)``, or ``X`` itself (arrays, and paths too many
        to hold in memory).

    Raises
    ------
    ValueError
        Naming a missing file, or the first file that cannot be decoded.
    """
    paths = _as_paths(X)
    if paths is None or len(paths) * int(np.prod(input_shape)) * 4 > max_bytes:
        return X if paths is None else paths
    return decode_all(paths, tuple(input_shape))


def decode_all(paths, input_shape, batch_size=256):
    """Every image of ``paths`` decoded to one float32 array ``(n, *input_shape)``.

    Raises
    ------
    ValueError
        Naming the first file that cannot be decoded.
    """
    out = np.empty((len(paths), *input_shape), np.float32)
    start = 0
    for batch in iterate_batches(image_batches(paths, input_shape, batch_size)):
        out[start : start + len(batch)] = batch
        start += len(batch)
    return out


def _epoch_indices(sampler):
    """A dataset of the sampler's index batches, one Python call per *epoch*, not per batch.

    Every new iterator starts at ``sampler.next_epoch`` and draws epochs by index, leaving
    the sampler as it is: under a tf.distribute strategy Keras's fit reads a batch to build
    the model, then starts a new iterator, and both must see the same batches (else 1 and
    2 replicas train on other ones); a resumed fit starts where the run stopped.
    """
    def epochs():
        epoch = sampler.next_epoch
        while True:
            yield np.stack(sampler.epoch(epoch))
            epoch += 1

    spec = tf.TensorSpec((None, sampler.batch_size), tf.int64)
    return tf.data.Dataset.from_generator(epochs, output_signature=spec).unbatch()


def training_dataset(X, y, sampler, input_shape, augment=False):
    """Endless ``(images float32 (P*K, *input_shape), labels int32 (P*K,))`` batches.

    Index batches come from ``sampler`` (a :class:`~embedder.data.sampling.PKSampler`), freshly
    drawn every epoch; ``len(sampler)`` batches make one epoch. Each iterator of the
    dataset starts at epoch ``sampler.next_epoch`` (``sampler.set_epoch`` moves it).
    Integer ``y`` is kept as int32, other labels become their index in ``np.unique(y)``.
    ``augment`` (see :func:`~embedder.data.augmentation.build_augmenter`): ``True`` adds
    a random horizontal flip, a shift of up to 10% and a brightness change of up to 20%;
    a preset name of :data:`~embedder.data.augmentation.AUGMENTATIONS` or the user's Keras
    layers apply those, seeded from the sampler's ``random_state``.
    """
    seed = sampler.random_state if isinstance(sampler.random_state, int) else None
    augmenter = build_augmenter(augment, check_input_shape(input_shape), seed)
    n = len(X)
    labels = tf.constant(_encode_labels(y, n))
    indices = _epoch_indices(sampler)
    ds = _gather_dataset(X, indices, input_shape)
    ds = ds.map(lambda images, idx: (images, tf.gather(labels, idx)))
    if augmenter is not None:
        # sequential map: the layers' random state is updated in order (reproducible)
        ds = ds.map(lambda images, lab: (augmenter(images, training=True), lab))
    return _without_autotune_thread(ds.prefetch(AUTOTUNE))


def offline_triplet_dataset(X, y, input_shape, batch_size, n_triplets, random_state=None):
    """Endless ``((anchor, positive, negative), zeros)`` batches of the seed's triplets.

    Every epoch draws ``n_triplets`` new :func:`~embedder.data.sampling.random_triplets`, in
    ``ceil(n_triplets / batch_size)`` batches (the last one may be smaller).
    """
    from embedder.data.sampling import random_triplets

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    random_triplets(y, n_triplets, 0)  # validate labels and n_triplets now, not mid-training
    rng = np.random.default_rng(random_state)

    def batches():
        while True:
            triplets = random_triplets(y, n_triplets, rng)
            for start in range(0, n_triplets, batch_size):
                yield triplets[start : start + batch_size].T.reshape(-1)  # a..., p..., n...

    indices = tf.data.Dataset.from_generator(
        batches, output_signature=tf.TensorSpec((None,), tf.int64)
    )

    def split(images, idx):
        anchor, positive, negative = tf.split(images, 3)
        return (anchor, positive, negative), tf.zeros(tf.shape(anchor)[:1], tf.float32)

    ds = _gather_dataset(X, indices, input_shape).map(split).prefetch(AUTOTUNE)
    return _without_autotune_thread(ds)
