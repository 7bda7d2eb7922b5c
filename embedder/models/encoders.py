"""Encoder registry: CNNs that map images to unit-norm embeddings.

Every encoder takes float32 pixels on the 0..255 scale, shape ``(batch, h, w, c)`` with
any ``h, w`` and the channel count of ``input_shape``; channel conversion, resizing to the
backbone's resolution and rescaling happen inside the model (:mod:`embedder.models.preprocessing`),
so a saved ``.keras`` encoder takes raw images of any size. The output is float32
``(batch, embedding_dim)`` with each *row* L2-normalised by :class:`SafeUnitNormalization`
(kept in float32 under a mixed-precision policy), so every row has unit norm for every
input, also when the vector before normalisation is zero or tiny.

New encoders are added with :func:`register_encoder`::

    @register_encoder("tiny")
    def _tiny(inputs, *, input_shape, embedding_dim, weights):
        x = preprocess(inputs, size=target_size(input_shape, 8), channels=3)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return embedding_head(x, embedding_dim)
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Callable

import keras
from keras import layers, ops

from embedder.checks import summary
from embedder.models.preprocessing import check_input_shape, preprocess, target_size

ENCODERS: dict[str, Callable] = {}

#: Keras's default 0.99 needs hundreds of steps before the moving statistics used at
#: inference match the batches; small image sets train for fewer (1797 digits: 42 steps an
#: epoch), and inference embeddings then squash together (measured: mean validation
#: distance 0.06 vs 1.3 in training mode after 2 epochs). 0.9 settles in ~50 steps.
BN_MOMENTUM = 0.9
_LOADS_OWN_WEIGHTS: set[str] = set()
#: Names of the layers :func:`embedding_head` adds: the part of an encoder that trains
#: alone while the backbone is frozen (:mod:`embedder.training.fine_tuning`). Names survive saving
#: to ``.keras``, so a saved encoder's head is found the same way.
HEAD_LAYER_NAMES = ("embedding", "l2_normalize")


def register_encoder(name: str, *, loads_weights: bool = False):
    """Register ``builder(inputs, *, input_shape, embedding_dim, weights) -> outputs``.

    ``inputs`` is the encoder's ``keras.Input``; the builder returns the embedding tensor
    (use :func:`embedding_head`). With ``loads_weights=True`` the builder receives the
    checked local ``weights`` path and loads it itself (e.g. into a backbone); otherwise it
    receives ``None`` and :func:`build_encoder` loads the file into the whole encoder.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")

    def decorator(builder):
        ENCODERS[name] = builder
        if loads_weights:
            _LOADS_OWN_WEIGHTS.add(name)
        else:
            _LOADS_OWN_WEIGHTS.discard(name)
        return builder

    return decorator


def available_encoders() -> list[str]:
    """Names accepted by :func:`build_encoder`, sorted."""
    return sorted(ENCODERS)


@keras.saving.register_keras_serializable(package="embedder")
class SafeUnitNormalization(layers.Layer):
    """Per-row L2 normalisation whose output rows have unit norm for every input.

    ``keras.layers.UnitNormalization`` computes ``x * rsqrt(max(sum(x**2), 1e-12))``: a row
    whose norm is below 1e-6 comes out shorter than 1 (an all-zero row stays zero), and a
    row with elements above ~1e19 overflows the squared sum to ``inf`` (a zero row). This
    layer, in float32 whatever the policy:

    - divides each row by its largest absolute element first (which does not change the
      direction), so the squared sum lies in ``[1, dim]``: exact for tiny and huge rows;
    - maps a row with an infinite element to the direction of its infinite elements
      (``sign(x)`` there, 0 elsewhere), the limit of ``x / ||x||`` (float16 overflow);
    - maps an all-zero row, which has no direction, to the fixed unit vector
      ``e_1 = (1, 0, ..., 0)``: deterministic, and its gradient is zero (TensorFlow
      flushes subnormal floats to zero on CPU, so a row of subnormals counts as zero);
    - leaves a row with a NaN element NaN (no direction can be read from it).

    Gradients are finite everywhere (the ``where`` branches never divide by zero).
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        # x / ||x|| does not depend on the scale, so the scale carries no gradient
        scale = ops.stop_gradient(ops.max(ops.abs(x), axis=-1, keepdims=True))
        finite = ops.isfinite(scale)
        usable = ops.logical_and(scale > 0, finite)
        z = x / ops.where(usable, scale, ops.ones_like(scale))
        z = ops.where(finite, z, ops.where(ops.isinf(x), ops.sign(x), ops.zeros_like(x)))
        squared = ops.sum(z * z, axis=-1, keepdims=True)
        nonzero = ops.logical_or(usable, ops.logical_not(finite))
        norm = ops.sqrt(ops.where(nonzero, squared, ops.ones_like(squared)))
        basis = ops.one_hot(ops.zeros_like(x[..., 0], dtype="int32"), ops.shape(x)[-1])
        return ops.where(nonzero, z / norm, ops.cast(basis, x.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape


def embedding_head(features, embedding_dim):
    """Dense projection to ``embedding_dim`` then :class:`SafeUnitNormalization` per row.

    The two layers are named :data:`HEAD_LAYER_NAMES`, which is how fine-tuning tells
    the head from the backbone.
    """
    dense_name, norm_name = HEAD_LAYER_NAMES
    x = layers.Dense(embedding_dim, name=dense_name)(features)
    # float32 so the normalisation is exact under a float16 policy
    return SafeUnitNormalization(dtype="float32", name=norm_name)(x)


def _conv_bn_relu(x, filters, name):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


@register_encoder("seed_cnn")
def _seed_cnn(inputs, *, input_shape, embedding_dim, weights):
    """The user's network: 5 x [Conv2D 3x3 -> MaxPool 2 -> BN -> ReLU], 16..256 filters."""
    # five 2x poolings need at least 32 px to keep a 1x1 map
    x = preprocess(inputs, size=target_size(input_shape, 32), channels=min(input_shape[-1], 3))
    for i, filters in enumerate((16, 32, 64, 128, 256), start=1):
        x = layers.Conv2D(filters, 3, padding="same", name=f"block{i}_conv")(x)
        x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{i}_bn")(x)
        x = layers.ReLU(name=f"block{i}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return embedding_head(x, embedding_dim)


@register_encoder("small_cnn")
def _small_cnn(inputs, *, input_shape, embedding_dim, weights):
    """A light CNN for 28-64 px images (Fashion-MNIST): 4 x [Conv 3x3 -> BN -> ReLU].

    32-64-128-256 filters with a 2x max-pooling after each of the first three blocks.
    One conv per block keeps a 60k-image epoch at 28x28 well under a minute on 2 CPU
    cores; in a 2-epoch softmax probe on Fashion-MNIST this layout (0.89 test accuracy)
    beat 32-64-128 with two poolings (0.84) at the same speed.
    """
    # three poolings: 16 px keeps a 2x2 map for the last conv (8x8 digits are upsampled)
    x = preprocess(inputs, size=target_size(input_shape, 16), channels=min(input_shape[-1], 3))
    for i, filters in enumerate((32, 64, 128, 256), start=1):
        x = _conv_bn_relu(x, filters, f"block{i}")
        if i < 4:
            x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return embedding_head(x, embedding_dim)


def _basic_block(x, filters, stride, name):
    """Two 3x3 convs with BN, added to the input (a strided 1x1 conv where the shape
    changes), then ReLU: ResNet's basic block (He et al. 2016)."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                 name=f"{name}_short_conv")(x)
        shortcut = layers.BatchNormalization(momentum=BN_MOMENTUM,
                                             name=f"{name}_short_bn")(shortcut)
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      name=f"{name}_conv1")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn1")(x)
    x = layers.ReLU(name=f"{name}_relu1")(x)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn2")(x)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.ReLU(name=f"{name}_relu2")(x)


@register_encoder("small_resnet")
def _small_resnet(inputs, *, input_shape, embedding_dim, weights):
    """A small residual network for colour photos trained from scratch.

    A 3x3 stem of 32 filters and a 2x max-pooling, then four stages of one basic block
    (:func:`_basic_block`) with 32, 64, 128 and 256 filters, the last three halving the
    resolution; global average pooling and the embedding head. About three times the
    multiply-adds of ``seed_cnn`` at the same input size (two convs per stage instead
    of one); 1.2 M weights.
    """
    # one pooling and three strided stages: 32 px keeps a 2x2 map for the last stage
    x = preprocess(inputs, size=target_size(input_shape, 32), channels=min(input_shape[-1], 3))
    x = _conv_bn_relu(x, 32, "stem")
    x = layers.MaxPooling2D(2, name="stem_pool")(x)
    for i, filters in enumerate((32, 64, 128, 256), start=1):
        x = _basic_block(x, filters, 1 if i == 1 else 2, f"stage{i}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return embedding_head(x, embedding_dim)


def _application(app, mode, inputs, input_shape, embedding_dim, weights):
    size = target_size(input_shape, 32)  # Keras Applications need at least 32 px
    x = preprocess(inputs, size=size, channels=3, mode=mode)
    try:
        backbone = app(input_shape=(*size, 3), include_top=False, weights=weights,
                       pooling="avg")
    except Exception as err:  # Keras's download raises a bare Exception offline
        if weights != "imagenet":
            raise
        raise ValueError(_imagenet_unavailable(err)) from err
    return embedding_head(backbone(x), embedding_dim)


def _imagenet_unavailable(err) -> str:
    """Name the file Keras looks for in its cache, so an offline user can put it there."""
    found = re.search(r"https?://\S+/([^/\s:]+\.h5)", str(err))
    cache = os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")),
                         "models")
    target = os.path.join(cache, found.group(1)) if found else f"a file in {cache}"
    return (f"weights='imagenet' could not be downloaded ({summary(err, 150)});"
            f" offline, copy the Keras Applications weights file to {target}")


@register_encoder("mobilenet_v2", loads_weights=True)
def _mobilenet_v2(inputs, *, input_shape, embedding_dim, weights):
    """``keras.applications.MobileNetV2`` (inputs scaled to -1..1) + Dense + L2 norm."""
    app = keras.applications.MobileNetV2
    return _application(app, "symmetric", inputs, input_shape, embedding_dim, weights)


@register_encoder("resnet50", loads_weights=True)
def _resnet50(inputs, *, input_shape, embedding_dim, weights):
    """``keras.applications.ResNet50`` (Caffe-style BGR mean subtraction) + Dense + L2 norm."""
    app = keras.applications.ResNet50
    return _application(app, "caffe", inputs, input_shape, embedding_dim, weights)


def _check_weights(weights):
    if weights is None or weights == "imagenet":
        return weights
    if not isinstance(weights, str | os.PathLike) or not os.path.isfile(weights):
        raise ValueError(
            "weights must be None, 'imagenet' or the path of an existing local weights "
            f"file, got {weights!r}"
        )
    return os.fspath(weights)


def build_encoder(name="seed_cnn", input_shape=(112, 112, 3), embedding_dim=128, weights=None):
    """Build a registered encoder.

    Parameters
    ----------
    name : str, default="seed_cnn"
        One of :func:`available_encoders`.
    input_shape : tuple of int, default=(112, 112, 3)
        ``(height, width, channels)`` of the images given; ``channels`` in {1, 3, 4}.
        The model accepts any height/width and resizes inside to ``(height, width)``,
        raised to the backbone's minimum resolution.
    embedding_dim : int, default=128
        Size of the output embedding.
    weights : str or path-like, optional
        A local weights file: for Keras Applications the backbone's ``include_top=False``
        weights, for the other encoders a ``.weights.h5`` of the whole encoder.

    Returns
    -------
    keras.Model
        Named ``"{name}_encoder"``; float32 ``(batch, embedding_dim)``, unit-norm rows.
    """
    if not isinstance(name, str) or name not in ENCODERS:
        raise ValueError(f"encoder must be one of {available_encoders()}, got {name!r}")
    shape = check_input_shape(input_shape)
    if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1:
        raise ValueError(f"embedding_dim must be a positive integer, got {embedding_dim!r}")
    weights = _check_weights(weights)
    if weights == "imagenet" and name not in _LOADS_OWN_WEIGHTS:
        raise ValueError(f"weights='imagenet' is only for Keras Applications backbones "
                         f"({', '.join(sorted(_LOADS_OWN_WEIGHTS))}), got encoder={name!r}")
    inputs = keras.Input(shape=(None, None, shape[-1]), dtype="float32", name="images")
    backbone_weights = weights if name in _LOADS_OWN_WEIGHTS else None
    try:
        outputs = ENCODERS[name](
            inputs, input_shape=shape, embedding_dim=embedding_dim, weights=backbone_weights
        )
        model = keras.Model(inputs, outputs, name=f"{name}_encoder")
        if weights is not None and backbone_weights is None:
            model.load_weights(weights)
    except (ValueError, OSError) as err:
        if weights is None:
            raise
        raise ValueError(f"weights file {weights!r} could not be loaded: "
                         f"{summary(err, 150)}") from err
    return model


def load_encoder(path, *, safe_mode=True, name=None):
    """Load a saved ``.keras`` encoder; ``ValueError`` naming ``path`` if it is not one.

    ``safe_mode=True`` (Keras's own) refuses archives that would run arbitrary code.
    ``name``: what messages call the file (default ``path``), e.g. the file whose bytes
    were copied to ``path``.
    """
    path = os.fspath(path)
    shown = path if name is None else str(name)
    if not os.path.isfile(path):
        raise ValueError(f"encoder file {shown!r} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"encoder file {shown!r} is not a Keras model (.keras zip archive)")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as err:  # Keras raises many types for a damaged archive
        # a KeyError's text is the repr of its key: the key itself reads better
        text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        raise ValueError(_unloadable(shown, text.replace(path, shown))) from err
    if not isinstance(model, keras.Model):
        raise ValueError(f"encoder file {shown!r} holds a {type(model).__name__}, not a model")
    return model


def _unloadable(name, text) -> str:
    """Why Keras could not load the encoder file ``name``, from Keras's ``text``, short.

    Keras nests the errors of the layers it rebuilds, each with its whole config
    ("... config={...}. Exception encountered: ..."): the innermost one says what failed.
    """
    if "safe_mode" in text:  # a Python lambda or other code: Keras's first sentence says
        what = text.split(". ")[0].rstrip(".").removeprefix("Requested the deserialization of ")
        return (f"encoder file {name!r} is refused by Keras's safe mode ({summary(what, 100)}: "
                "its code would run); use safe_mode=False only if you trust its author")
    lines = text.rsplit("Exception encountered:", 1)[-1].strip().splitlines()
    reason = summary(lines[0], 150) if lines else "no reason given"
    return f"encoder file {name!r}: Keras could not rebuild the model from it ({reason})"
