"""Decoding image files to pixels, and errors that name the file that failed.

PNG, JPEG and GIF are decoded in-graph by TensorFlow (fast, parallel inside ``tf.data``);
every other format (BMP, PGM/PPM/PBM, TIFF, WebP) by Pillow. Pixels are float32 on the
0..255 scale. :mod:`embedder.data.image_pipeline` builds the ``tf.data`` pipelines on top.

A file that cannot be decoded inside a pipeline stops it with a TensorFlow error.
TensorFlow carries nothing but text through its errors, so the pipelines fail through
:func:`assert_decoded`, whose message holds the file name between fixed markers, and
:func:`decode_errors` turns that error into a ``ValueError`` naming the file (and why
Pillow cannot read it either)::

    with decode_errors():
        model.fit(training_dataset(paths, y, sampler, input_shape), ...)
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from embedder.checks import summary
from embedder.models.preprocessing import check_input_shape, convert_channels

__all__ = [
    "DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "TF_EXTENSIONS", "assert_decoded",
    "check_pixels", "decode_errors", "decode_file", "fit_to_shape", "get_max_pixels",
    "pil_array", "read_image", "set_max_pixels",
]

IMAGE_EXTENSIONS = (
    ".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"
)
# decoded in-graph by TensorFlow; BMP goes through Pillow, which reads more BMP variants
TF_EXTENSIONS = (".gif", ".jpeg", ".jpg", ".png")
# The file name travels in the error text between these two markers; tf.debugging.Assert
# prints each of its data items in brackets: "[<_MARK>] [<path>] [<_END>]".
_MARK, _END = "embedder: cannot decode image file", ":end"
_OPEN, _CLOSE = f"[{_MARK}] [", f"] [{_END}]"
#: Largest image decoded unless :func:`set_max_pixels` says else: 64 Mpx (Pillow's own
#: limit is 89 Mpx). The header declares the size, so a few KB can claim gigabytes.
DEFAULT_MAX_PIXELS = 64 * 2**20
_BUDGET = {"max_pixels": DEFAULT_MAX_PIXELS}
_PILLOW_SIZE = re.compile(r"Image size \((\d+) pixels\)")


def set_max_pixels(max_pixels):
    """Set the pixel budget of every image decoded in this process.

    A file whose header declares more pixels (width x height, times the frames of a GIF,
    which TensorFlow decodes all) is refused before any decoder allocates memory for it.
    Pillow's own limit (``PIL.Image.MAX_IMAGE_PIXELS``) is set to the same value, so its
    decompression-bomb warning fires only for files refused anyway.

    Parameters
    ----------
    max_pixels : int
        At least 1; :data:`DEFAULT_MAX_PIXELS` restores the default.

    Raises
    ------
    ValueError
        If ``max_pixels`` is not a positive integer.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) \
            or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    _BUDGET["max_pixels"] = int(max_pixels)
    Image.MAX_IMAGE_PIXELS = int(max_pixels)


def get_max_pixels():
    """The pixel budget set by :func:`set_max_pixels` (default :data:`DEFAULT_MAX_PIXELS`).

    Returns
    -------
    int
    """
    return _BUDGET["max_pixels"]


def _reason(err, path) -> str:
    """A decoder's error, short and without the path the message already names."""
    text = str(err).replace(f" {str(path)!r}", "").replace(str(path), "the file")
    return summary(text or type(err).__name__, 120)


def _too_large(path, pixels, detail="", limit=None):
    limit = _BUDGET["max_pixels"] if limit is None else limit
    return ValueError(
        f"cannot read image file {str(path)!r}: its header declares {detail}{pixels:,} "
        f"pixels, more than the limit of {limit:,} (raise it with --max-pixels or "
        "embedder.data.set_max_pixels if you trust the file)"
    )


def _check_opened(img, path):
    """Refuse an opened (header-only) Pillow image over the pixel budget."""
    pixels = img.width * img.height
    if pixels > _BUDGET["max_pixels"]:
        raise _too_large(path, pixels, f"{img.width} x {img.height} = ")
    if img.format == "GIF":  # TensorFlow allocates every frame at the screen size
        frames = img.n_frames
        if pixels * frames > _BUDGET["max_pixels"]:
            raise _too_large(path, pixels * frames,
                             f"{frames} frames of {img.width} x {img.height} = ")


@contextlib.contextmanager
def _bomb_errors(path):
    """Pillow's decompression-bomb warning and error as our refusal naming ``path``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        found = _PILLOW_SIZE.search(str(err))
        if found is None:
            raise ValueError(
                f"cannot read image file {str(path)!r}: {_reason(err, path)}") from None
        limit = min(_BUDGET["max_pixels"], Image.MAX_IMAGE_PIXELS or _BUDGET["max_pixels"])
        raise _too_large(path, int(found.group(1)), limit=limit) from None


def check_pixels(path):
    """Refuse an image file whose header declares more pixels than the budget.

    Only the header is read (Pillow's lazy ``Image.open``); nothing is decoded.

    Parameters
    ----------
    path : str or os.PathLike
        The image file.

    Raises
    ------
    ValueError
        Naming the file and its size if it is over :func:`get_max_pixels`, or naming the
        file if Pillow cannot read its header.
    """
    try:
        with _bomb_errors(path), Image.open(path) as img:
            _check_opened(img, path)
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise ValueError(
            f"cannot read image file {str(path)!r}: {_reason(err, path)}") from err


def _checked(path):
    """:func:`check_pixels` for ``tf.numpy_function`` (bytes in, 0 pixels over out)."""
    check_pixels(path.decode())
    return np.int64(0)


def _be32(data, start):
    """The big-endian uint32 at byte ``start`` of the string tensor ``data``, as int64."""
    b = tf.cast(tf.io.decode_raw(tf.strings.substr(data, start, 4), tf.uint8), tf.int64)
    return ((b[0] * 256 + b[1]) * 256 + b[2]) * 256 + b[3]


def _header_check(data, path):
    """An assertion that the image in ``data`` is within the pixel budget, from its header.

    PNG (IHDR) and JPEG (``extract_jpeg_shape``) headers are read in-graph; any other
    content (GIF, whose frames must be counted, or a mislabelled file) by
    :func:`check_pixels` in Python. A file over the budget fails the assertion, and
    :func:`decode_errors` then names it with Pillow's reading of the same header.
    """
    limit = tf.constant(_BUDGET["max_pixels"], tf.int64)

    def png():
        return _be32(data, 16) * _be32(data, 20)

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
        return shape[0] * shape[1]

    def other():
        return tf.reshape(tf.numpy_function(_checked, [path], tf.int64), ())

    is_png = tf.equal(tf.strings.substr(data, 0, 8), b"\x89PNG\r\n\x1a\n")
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff")
    pixels = tf.cond(is_png, png, lambda: tf.cond(is_jpeg, jpeg, other))
    return tf.debugging.assert_less_equal(pixels, limit)


def _pillow_image(img, path, channels):
    """The decoded uint8 ``(h, w, channels)`` array of an opened Pillow image."""
    if img.width == 0 or img.height == 0:
        raise ValueError(
            f"cannot read image file {str(path)!r}: it has {img.width} x {img.height} "
            "pixels, expected at least 1 x 1"
        )
    img.load()
    if img.mode.startswith(("I", "F")):  # 16/32-bit grey: scale 16-bit to 0..255
        a = np.asarray(img, dtype=np.float64)
        a = a / 257.0 if img.mode.startswith("I;16") or a.max() > 255 else a
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
    img = img.convert({1: "L", 3: "RGB", 4: "RGBA"}[channels])
    return np.asarray(img, dtype=np.uint8).reshape(img.height, img.width, channels)


def pil_array(path, channels):
    """Decode ``path`` with Pillow to uint8 ``(h, w, channels)``.

    Parameters
    ----------
    path : str or os.PathLike
        The image file.
    channels : {1, 3, 4}
        Channels of the result (grey, RGB, RGBA).

    Returns
    -------
    numpy.ndarray
        uint8 pixels.

    Raises
    ------
    ValueError
        Naming the file if it is unreadable, not an image, empty (0 pixels high or
        wide), or its header declares more pixels than :func:`get_max_pixels`.
    """
    try:
        with _bomb_errors(path), Image.open(path) as img:
            _check_opened(img, path)
            return _pillow_image(img, path, channels)
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise ValueError(
            f"cannot read image file {str(path)!r}: {_reason(err, path)}") from err
    except ValueError as err:
        if str(err).startswith("cannot read image file"):
            raise
        raise ValueError(
            f"cannot read image file {str(path)!r}: {_reason(err, path)}") from err


def fit_to_shape(images, shape):
    """Float32 image(s) ``(..., h, w, c)`` converted and resized to ``shape``.

    Parameters
    ----------
    images : tensor or array
        One image or a batch, any numeric dtype.
    shape : tuple of int
        ``(height, width, channels)``.

    Returns
    -------
    tf.Tensor
        float32 images of ``shape`` (antialiased resizing).
    """
    images = convert_channels(tf.cast(images, tf.float32), shape[2])
    if tuple(images.shape[-3:-1]) != tuple(shape[:2]):  # unknown (None) sizes: resize
        images = tf.image.resize(images, shape[:2], antialias=True)
    return images


def read_image(path, input_shape):
    """Read one image file as float32 ``input_shape`` pixels on the 0..255 scale (Pillow).

    Parameters
    ----------
    path : str or os.PathLike
        The image file.
    input_shape : tuple of int
        ``(height, width, channels)`` of the result.

    Returns
    -------
    numpy.ndarray
        float32 pixels of shape ``input_shape``.

    Raises
    ------
    ValueError
        Naming the file if it is unreadable, corrupt, empty or not an image.
    """
    shape = check_input_shape(input_shape)
    return fit_to_shape(pil_array(os.fspath(path), shape[2]), shape).numpy()


def decode_file(path, use_tf, channels):
    """Decode one file (a string tensor) to float32 ``(h, w, channels)`` in a graph.

    Parameters
    ----------
    path : tf.Tensor
        Scalar string: the file name.
    use_tf : bool or tf.Tensor
        TensorFlow's decoder where true, else Pillow (through ``tf.numpy_function``). A
        Python bool when every file takes the same decoder (no ``tf.cond``, which costs
        throughput), else a boolean tensor.
    channels : {1, 3, 4}
        Channels of the result.

    Returns
    -------
    tf.Tensor
        float32 pixels on the 0..255 scale.
    """

    def tf_decode():  # always 3 channels: TensorFlow's GIF decoder cannot give grey
        # TensorFlow's decoders have no pixel limit: the header is checked first
        data = tf.io.read_file(path)
        with tf.control_dependencies([_header_check(data, path)]):
            img = tf.io.decode_image(data, channels=3, expand_animations=False)
        return convert_channels(tf.cast(img, tf.float32), channels)

    def pil_decode():
        img = tf.numpy_function(lambda p: pil_array(p.decode(), channels), [path], tf.uint8)
        return tf.cast(tf.ensure_shape(img, (None, None, channels)), tf.float32)

    if isinstance(use_tf, bool):
        return tf_decode() if use_tf else pil_decode()
    return tf.cond(use_tf, tf_decode, pil_decode)


def assert_decoded(ok, path):
    """A graph assertion that fails with ``path`` in the text :func:`decode_errors` reads.

    Parameters
    ----------
    ok : tf.Tensor
        Scalar bool: whether the image was decoded.
    path : tf.Tensor
        Scalar string: the file to name when it was not.

    Returns
    -------
    tf.Operation
        The assertion (eager: already checked).
    """
    return tf.debugging.Assert(ok, [_MARK, path, _END])


def _failed_path(message):
    """The file named between the markers of :func:`assert_decoded`, or None."""
    _, found, tail = message.partition(_OPEN)
    if not found:
        return None
    path, found, _ = tail.partition(_CLOSE)
    return path if found else None


@contextlib.contextmanager
def decode_errors():
    """Turn pipeline errors caused by an undecodable file into ``ValueError`` naming it.

    Wrap the code that iterates a dataset of :mod:`embedder.data.image_pipeline` (a ``for``
    loop, ``model.fit``, ``model.predict``) in ``with decode_errors():``. Other errors
    pass through unchanged.

    Yields
    ------
    None
    """
    try:
        yield
    except tf.errors.OpError as err:
        path = _failed_path(str(err))
        if path is None:
            raise
        try:
            pil_array(path, 3)
            reason = "TensorFlow could not decode it"
        except ValueError as pil_err:
            reason = str(pil_err).removeprefix(f"cannot read image file {path!r}: ")
        raise ValueError(f"cannot read image file {path!r}: {reason}") from None

