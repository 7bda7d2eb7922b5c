"""Decoding image files and the ``tf.data`` pipelines that feed encoders.

Pixels are float32 on the 0..255 scale; the pipelines only bring every image of a batch to
``input_shape`` (resizing to the backbone happens inside encoders). Files are streamed from
disk, never loaded into memory all at once: PNG, JPEG and GIF are decoded by TensorFlow,
every other format (BMP, PGM/PPM/PBM, TIFF, WebP) by Pillow. Public names are re-exported
by :mod:`embedder.data`.

A file that cannot be decoded stops a pipeline with a ``tf.errors.InvalidArgumentError``
whose message names the file; iterate inside :func:`decode_errors` (or through
:func:`iterate_batches`) to get a ``ValueError`` instead::

    with decode_errors():
        model.fit(training_dataset(paths, y, sampler, input_shape), ...)
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import numpy as np
import tensorflow as tf

from embedder.preprocessing import check_input_shape, convert_channels

IMAGE_EXTENSIONS = (
    ".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"
)
# decoded in-graph by TensorFlow; BMP goes through Pillow, which reads more BMP variants
TF_EXTENSIONS = (".gif", ".jpeg", ".jpg", ".png")
_MARK = "embedder: cannot decode image file"
_MARK_RE = re.compile(re.escape(f"[{_MARK}] [") + r"(.*)\] \[:end\]")
AUTOTUNE = tf.data.AUTOTUNE


def _pil_array(path, channels):
    """Decode ``path`` with Pillow to uint8 ``(h, w, channels)``; ValueError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode.startswith(("I", "F")):  # 16/32-bit grey: scale 16-bit to 0..255
                a = np.asarray(img, dtype=np.float64)
                a = a / 257.0 if img.mode.startswith("I;16") or a.max() > 255 else a
                img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
            img = img.convert({1: "L", 3: "RGB", 4: "RGBA"}[channels])
            return np.asarray(img, dtype=np.uint8).reshape(img.height, img.width, channels)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise ValueError(f"cannot read image file {str(path)!r}: {err}") from err


def _fit(images, shape):
    """Float32 image(s) ``(..., h, w, c)`` converted and resized to ``shape``."""
    images = convert_channels(tf.cast(images, tf.float32), shape[2])
    if tuple(images.shape[-3:-1]) != shape[:2]:  # unknown (None) sizes are always resized
        images = tf.image.resize(images, shape[:2], antialias=True)
    return images


def read_image(path, input_shape):
    """Read one image file as float32 ``input_shape`` pixels on the 0..255 scale (Pillow).

    Raises ``ValueError`` naming the file if it is unreadable, corrupt or not an image.
    """
    shape = check_input_shape(input_shape)
    return _fit(_pil_array(os.fspath(path), shape[2]), shape).numpy()


def check_images(X, name="X"):
    """Validate an in-memory image array: numeric, 4-D ``(n, h, w, c)``, finite."""
    X = np.asarray(X)
    if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
        raise TypeError(f"{name} must hold numeric pixel values, got dtype {X.dtype}")
    if X.ndim != 4:
        raise ValueError(f"{name} must be a 4-D array (n, height, width, channels), got "
                         f"shape {X.shape}")
    if np.issubdtype(X.dtype, np.floating):
        step = max(1, 2**24 // max(1, X[:1].size))  # chunks of ~16M values: bounded memory
        bad = sum(int((~np.isfinite(X[i : i + step])).sum()) for i in range(0, len(X), step))
        if bad:
            raise ValueError(f"{name} must be finite, got {bad} NaN or infinite value(s)")
    return X


def _decode(path, use_tf, channels):
    """Decode one file to float32 (h, w, channels): TensorFlow where ``use_tf``, else Pillow.

    ``use_tf`` is a Python bool when every file takes the same decoder (no ``tf.cond``,
    which costs throughput), else a boolean tensor.
    """

    def tf_decode():  # always 3 channels: TensorFlow's GIF decoder cannot give grey
        img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return convert_channels(tf.cast(img, tf.float32), channels)

    def pil_decode():
        img = tf.numpy_function(lambda p: _pil_array(p.decode(), channels), [path], tf.uint8)
        return tf.cast(tf.ensure_shape(img, (None, None, channels)), tf.float32)

    if isinstance(use_tf, bool):
        return tf_decode() if use_tf else pil_decode()
    return tf.cond(use_tf, tf_decode, pil_decode)


def _as_paths(X, name="X"):
    """``X`` as a list of existing file paths, or ``None`` if it is not 1-D (an array)."""
    if getattr(np.asarray(X, dtype=object) if isinstance(X, list | tuple) else X, "ndim", 0) != 1:
        return None
    if not all(isinstance(p, str | os.PathLike) for p in X):
        raise TypeError(f"{name} must be a 4-D image array or a 1-D list of image paths")
    paths = [os.fspath(p) for p in X]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"{name} lists {len(missing)} missing image file(s), e.g. {missing[:3]}")
    return paths


def _decoded_batches(index_batches, paths, input_shape):
    """Map a dataset of int64 index vectors to ``(images, indices)`` decoded from ``paths``.

    Each batch is decoded in parallel with errors dropped (``ignore_errors``); a sentinel
    element then reveals any dropped image, and an ``Assert`` names the first such file.
    """
    paths_t = tf.constant(paths, dtype=tf.string)
    use_tf = [Path(p).suffix.lower() in TF_EXTENSIONS for p in paths]
    use_tf = all(use_tf) if len(set(use_tf)) < 2 else tf.constant(use_tf)
    sentinel = (tf.constant(-1, tf.int64), tf.zeros(input_shape, tf.float32))

    def decode(i):
        flag = use_tf if isinstance(use_tf, bool) else use_tf[i]
        return i, _fit(_decode(paths_t[i], flag, input_shape[2]), input_shape)

    def check(got, images, expected):
        got = tf.concat([got[:-1], -tf.ones_like(expected)], 0)[: tf.size(expected)]
        wrong = tf.not_equal(got, expected)
        first = tf.argmax(tf.cast(wrong, tf.int32))
        tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(wrong)), [_MARK, paths_t[expected[first]], ":end"]
        )
        return tf.ensure_shape(images[:-1], (None, *input_shape)), expected

    def one_batch(indices):
        decoded = tf.data.Dataset.from_tensor_slices(indices).map(decode, AUTOTUNE)
        decoded = decoded.ignore_errors().concatenate(tf.data.Dataset.from_tensors(sentinel))
        batch = decoded.batch(tf.size(indices, tf.int64) + 1)
        return batch.map(lambda got, images: check(got, images, indices))

    return index_batches.flat_map(one_batch)


@contextlib.contextmanager
def decode_errors():
    """Turn pipeline errors caused by an undecodable file into ``ValueError`` naming it.

    Wrap the code that iterates a dataset from :func:`image_batches`,
    :func:`training_dataset` or :func:`offline_triplet_dataset` (a ``for`` loop,
    ``model.fit``, ``model.predict``) in ``with decode_errors():``.
    """
    try:
        yield
    except tf.errors.OpError as err:
        match = _MARK_RE.search(str(err))
        if match is None:
            raise
        path = match.group(1)
        try:
            _pil_array(path, 3)
            reason = "TensorFlow could not decode it"
        except ValueError as pil_err:
            reason = str(pil_err.__cause__ or pil_err)
        raise ValueError(f"cannot read image file {path!r}: {reason}") from None


def iterate_batches(dataset):
    """Iterate ``dataset`` as NumPy arrays inside :func:`decode_errors`."""
    with decode_errors():
        yield from dataset.as_numpy_iterator()


# ------------------------------------------------------------------------ pipelines
def image_batches(X, input_shape, batch_size=256):
    """Float32 batches ``(b, *input_shape)`` of ``X`` in order, for inference.

    ``X`` is a 4-D array (sliced batch by batch, so memory stays bounded) or a 1-D array /
    list of image paths (decoded in parallel, prefetched). Iterate inside
    :func:`decode_errors` to get a ``ValueError`` naming an undecodable file.
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
        ds = ds.map(lambda b: _fit(b, shape), AUTOTUNE)
    # a known length: Keras's predict() warns "ran out of data" on unknown cardinality
    n_batches = -(-len(X) // batch_size)
    return ds.apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(AUTOTUNE)


def _encode_labels(y, n):
    y = np.asarray(y)
    y = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"y must have shape ({n},) to match X, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        y = np.unique(y, return_inverse=True)[1]
    return y.astype(np.int32)


def _gather_dataset(X, index_batches, input_shape):
    """Images for a dataset of index vectors: gathered from memory or decoded from paths."""
    shape = check_input_shape(input_shape)
    paths = _as_paths(X)
    if paths is not None:
        return _decoded_batches(index_batches, paths, shape)
    X = check_images(X)

    def gather(idx):  # a host-side copy of only the P*K images of one batch
        return X[idx]

    def lookup(idx):
        images = tf.numpy_function(gather, [idx], tf.as_dtype(X.dtype))
        images = tf.ensure_shape(images, (None, *X.shape[1:]))
        return _fit(images, shape), idx

    return index_batches.map(lookup, AUTOTUNE)


def training_dataset(X, y, sampler, input_shape, augment=False):
    """Endless ``(images float32 (P*K, *input_shape), labels int32 (P*K,))`` batches.

    Index batches come from ``sampler`` (a :class:`~embedder.sampling.PKSampler`), freshly
    drawn every epoch; ``len(sampler)`` batches make one epoch. Integer ``y`` is kept as
    int32, other labels become their index in ``np.unique(y)``. ``augment=True`` adds a
    random horizontal flip, a shift of up to 10% and a brightness change of up to 20%.
    """
    n = len(X)
    labels = tf.constant(_encode_labels(y, n))
    indices = tf.data.Dataset.from_generator(
        lambda: iter(sampler), output_signature=tf.TensorSpec((None,), tf.int64)
    )
    ds = _gather_dataset(X, indices, input_shape)
    ds = ds.map(lambda images, idx: (images, tf.gather(labels, idx)))
    if augment:
        import keras

        seed = sampler.random_state if isinstance(sampler.random_state, int) else None
        seeds = [None] * 3 if seed is None else [seed, seed + 1, seed + 2]
        augmenter = keras.Sequential([
            keras.layers.RandomFlip("horizontal", seed=seeds[0]),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seeds[1]),
            keras.layers.RandomBrightness(0.2, value_range=(0, 255), seed=seeds[2]),
        ])
        # sequential map: the layers' random state is updated in order (reproducible)
        ds = ds.map(lambda images, lab: (augmenter(images, training=True), lab))
    return ds.prefetch(AUTOTUNE)


def offline_triplet_dataset(X, y, input_shape, batch_size, n_triplets, random_state=None):
    """Endless ``((anchor, positive, negative), zeros)`` batches of the seed's triplets.

    Every epoch draws ``n_triplets`` new :func:`~embedder.sampling.random_triplets`, in
    ``ceil(n_triplets / batch_size)`` batches (the last one may be smaller).
    """
    from embedder.sampling import random_triplets

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

    return _gather_dataset(X, indices, input_shape).map(split).prefetch(AUTOTUNE)
