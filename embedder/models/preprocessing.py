"""Keras layers that adapt raw images inside an encoder.

Encoders take float32 pixels on the 0..255 scale with any height and width; these layers
convert the channel count, resize to the backbone's resolution and rescale, so a saved
``.keras`` encoder is self-contained. Resizing and rescaling are Keras built-ins
(``Resizing``, ``Rescaling``); only the channel conversion is a custom (registered) layer.
"""

from __future__ import annotations

import keras
from keras import ops

CHANNELS = (1, 3, 4)
# ITU-R BT.601 luma weights, as in Pillow's "L" mode (they sum to 1: grey stays grey).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# Per-channel means (BGR order) subtracted by Keras Applications' "caffe" preprocessing.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
RESCALE_MODES = ("unit", "symmetric", "caffe")


def check_channels(channels, name="channels"):
    """Return ``channels`` as an int, or raise ``ValueError`` if it is not 1, 3 or 4."""
    if isinstance(channels, bool) or not isinstance(channels, int) or channels not in CHANNELS:
        raise ValueError(f"{name} must be one of {list(CHANNELS)}, got {channels!r}")
    return int(channels)


def check_input_shape(input_shape, name="input_shape"):
    """Return ``input_shape`` as 3 ints ``(height, width, channels)``; ``ValueError`` if bad."""
    try:
        shape = tuple(int(d) for d in input_shape)
        ok = all(float(d) == s for d, s in zip(input_shape, shape, strict=True))
    except (TypeError, ValueError):
        shape, ok = (), False
    if not (ok and len(shape) == 3 and min(shape) >= 1 and shape[2] in CHANNELS):
        raise ValueError(
            f"{name} must be 3 positive integers (height, width, channels) with channels in "
            f"{list(CHANNELS)}, got {input_shape!r}"
        )
    return shape


def convert_channels(images, channels):
    """Convert a batch ``(..., h, w, c)`` with ``c`` in 1..4 to ``channels`` channels.

    Grey is tiled to RGB, an alpha channel (grey+alpha or RGBA) is dropped, and RGB is
    reduced to grey by luminance (:data:`LUMA_WEIGHTS`). Works in ``keras.ops``, so it
    serves both the :class:`ChannelAdapter` layer and the ``tf.data`` pipelines.
    """
    channels = check_channels(channels)
    in_channels = images.shape[-1]
    if in_channels not in (1, 2, 3, 4):
        raise ValueError(f"images must have 1 to 4 channels, got shape {tuple(images.shape)}")
    if in_channels in (2, 4):  # drop alpha
        images = images[..., : in_channels - 1]
        in_channels -= 1
    if in_channels == channels:
        return images
    if channels == 3:  # grey -> RGB
        return ops.concatenate([images] * 3, axis=-1)
    if channels == 1:  # RGB -> grey
        weights = ops.convert_to_tensor(LUMA_WEIGHTS, dtype=images.dtype)
        return ops.sum(images * weights, axis=-1, keepdims=True)
    # channels == 4: RGB(A) expected, add an opaque alpha channel
    rgb = images if in_channels == 3 else ops.concatenate([images] * 3, axis=-1)
    return ops.concatenate([rgb, ops.full_like(rgb[..., :1], 255)], axis=-1)


@keras.saving.register_keras_serializable(package="embedder")
class ChannelAdapter(keras.layers.Layer):
    """Convert images to ``channels`` channels (see :func:`convert_channels`).

    Parameters
    ----------
    channels : {1, 3, 4}
        Channel count the backbone wants.
    order : {"rgb", "bgr"}, default="rgb"
        ``"bgr"`` reverses the colour channels afterwards (Caffe-style backbones).
    """

    def __init__(self, channels=3, order="rgb", **kwargs):
        super().__init__(**kwargs)
        self.channels = check_channels(channels)
        if order not in ("rgb", "bgr"):
            raise ValueError(f"order must be one of ['bgr', 'rgb'], got {order!r}")
        self.order = order

    def call(self, inputs):
        images = convert_channels(inputs, self.channels)
        if self.order == "bgr" and self.channels >= 3:
            images = ops.concatenate([images[..., 2::-1], images[..., 3:]], axis=-1)
        return images

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "order": self.order}


def target_size(input_shape, min_size):
    """Resolution ``(h, w)`` a backbone runs at: ``input_shape``'s, raised to ``min_size``."""
    return max(int(input_shape[0]), min_size), max(int(input_shape[1]), min_size)


def preprocess(inputs, *, size, channels=3, mode="unit", name="preprocess"):
    """Apply channel conversion, resizing and rescaling to a symbolic image tensor.

    Parameters
    ----------
    inputs : KerasTensor
        ``(batch, h, w, c)`` float pixels on the 0..255 scale; ``h, w`` may be ``None``.
    size : tuple of int
        ``(height, width)`` the backbone runs at (every image is resized to it).
    channels : {1, 3, 4}
        Channel count the backbone wants.
    mode : {"unit", "symmetric", "caffe"}
        ``"unit"``: 0..1; ``"symmetric"``: -1..1 (MobileNet); ``"caffe"``: BGR minus the
        ImageNet channel means (ResNet50).
    name : str
        Prefix of the layer names.
    """
    if mode not in RESCALE_MODES:
        raise ValueError(f"mode must be one of {list(RESCALE_MODES)}, got {mode!r}")
    x = inputs
    order = "bgr" if mode == "caffe" else "rgb"
    if inputs.shape[-1] != channels or order == "bgr":
        x = ChannelAdapter(channels, order=order, name=f"{name}_channels")(x)
    # training=False: Resizing's call defaults to training=True, which Keras 3.15 pushes
    # into the call context of an encoder called as ``encoder(x)``, so every
    # BatchNormalization after it would use batch statistics (and update its moving ones)
    # outside fit. Stored in the graph node; a training=True call still trains them.
    x = keras.layers.Resizing(*size, interpolation="bilinear", name=f"{name}_resize")(
        x, training=False)
    if mode == "unit":
        return keras.layers.Rescaling(1.0 / 255.0, name=f"{name}_rescale")(x)
    if mode == "symmetric":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=f"{name}_rescale")(x)
    offset = [-m for m in CAFFE_MEAN_BGR]
    return keras.layers.Rescaling(1.0, offset=offset, name=f"{name}_rescale")(x)
