"""Training-time augmentation: the presets and the user's own Keras layers, in one place.

``augment`` (a :class:`~embedder.training.TrainingConfig` setting and a
``TripletEmbedder`` parameter) is ``False``, ``True`` (the original augmenter: flip,
shift, brightness), a preset name of :data:`AUGMENTATIONS` or the user's own Keras
preprocessing layers (a list / tuple of layers, or a ``keras.Sequential``).
:func:`build_augmenter` turns it into one seeded ``keras.Sequential`` applied to training
batches only (inference and validation never see it).
"""

from __future__ import annotations

import copy

__all__ = ["AUGMENTATIONS", "augment_problem", "build_augmenter", "check_augment",
           "describe_augment"]

_RANGE = (0, 255)  # pixels of every pipeline are float32 on the 0..255 scale


def _original(channels):
    """``augment=True``: flip, a shift of up to 10 %, brightness up to 20 % (unchanged)."""
    import keras

    return [
        keras.layers.RandomFlip("horizontal"),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
        keras.layers.RandomBrightness(0.2, value_range=_RANGE),
    ]


def _photo(channels):
    """Random resized crop (zoom in up to 25 % per side, aspect jitter), horizontal flip,
    colour jitter (brightness, contrast and, for RGB, saturation)."""
    import keras

    layers = [
        keras.layers.RandomZoom((-0.25, 0.0), (-0.25, 0.0), fill_mode="reflect"),
        keras.layers.RandomFlip("horizontal"),
        keras.layers.RandomBrightness(0.2, value_range=_RANGE),
        keras.layers.RandomContrast(0.2, value_range=_RANGE),
    ]
    if channels == 3:
        # 0.5 is no change; 0.3..0.7 desaturates or saturates a little. On 0..1: with
        # value_range=(0, 255) Keras 3.15's RandomSaturation left the range (-85 seen).
        layers += [keras.layers.Rescaling(1 / 255),
                   keras.layers.RandomSaturation((0.3, 0.7), value_range=(0, 1)),
                   keras.layers.Rescaling(255)]
    return layers


def _digits(channels):
    """Shifts up to 10 %, rotations up to 10 degrees, zoom up to 10 %; never a flip (a
    mirrored 2 or 7 is not a 2 or 7)."""
    import keras

    return [
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
        keras.layers.RandomRotation(10 / 360, fill_mode="constant"),
        keras.layers.RandomZoom(0.1, fill_mode="constant"),
    ]


#: Preset name -> function of the channel count returning fresh, unseeded Keras layers.
AUGMENTATIONS = {"photo": _photo, "digits": _digits}

_EXPECTED = ("False, True, one of {names} or Keras preprocessing layers (a list or tuple "
             "of layers, or a keras.Sequential)")


def _is_layer(value):
    import keras

    return isinstance(value, keras.layers.Layer)


def augment_problem(value):
    """None when ``value`` is a valid ``augment``, else what it must be (for a message)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return None if value in AUGMENTATIONS else _EXPECTED.format(names=list(AUGMENTATIONS))
    if isinstance(value, list | tuple) and value and all(map(_is_layer, value)):
        return None
    if not isinstance(value, list | tuple | str) and _is_layer(value):
        return None
    return _EXPECTED.format(names=list(AUGMENTATIONS))


def check_augment(value, name="augment"):
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is a valid ``augment``."""
    problem = augment_problem(value)
    if problem is not None:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise ValueError(f"{name} must be {problem}, got {shown}")


def _seeded_copy(layer, seed):
    """A fresh copy of ``layer`` (the user's object is never built or advanced), with
    ``seed`` when the layer takes one and has none: reproducible from ``random_state``."""
    config = layer.get_config()
    if "seed" in config and config["seed"] is None and seed is not None:
        return type(layer).from_config({**config, "seed": seed})
    return copy.deepcopy(layer)


def build_augmenter(augment, input_shape, seed=None):
    """The training augmenter for ``augment``, or None for ``False``.

    Parameters
    ----------
    augment : bool, str, list or tuple of keras.layers.Layer, or keras.layers.Layer
        ``True``: flip, shift and brightness; a name of :data:`AUGMENTATIONS`; or the
        user's layers (copied, never changed).
    input_shape : tuple of int
        ``(height, width, channels)`` of the images (colour layers need 3 channels).
    seed : int or None, default=None
        Layer ``i`` without a seed of its own gets ``seed + i`` (None: unseeded).

    Returns
    -------
    keras.Sequential or None
        Apply as ``augmenter(images, training=True)`` to float32 images on 0..255.

    Raises
    ------
    ValueError
        Naming ``augment`` and the allowed values.
    """
    import keras

    check_augment(augment)
    if augment is False:
        return None
    channels = int(input_shape[-1])
    if augment is True:
        layers = _original(channels)
    elif isinstance(augment, str):
        layers = AUGMENTATIONS[augment](channels)
    elif isinstance(augment, keras.Sequential):
        layers = list(augment.layers)
    else:
        layers = list(augment) if isinstance(augment, list | tuple) else [augment]
    return keras.Sequential([_seeded_copy(layer, None if seed is None else seed + i)
                             for i, layer in enumerate(layers)])


def describe_augment(augment):
    """``augment`` as plain data (JSON): itself for a bool or name, else the layers'
    Keras configs (what identifies a run in checkpoints and reports).

    Returned as read back from JSON (tuples as lists), so a checkpoint's saved manifest
    equals the one a resumed run computes.
    """
    if isinstance(augment, bool | str):
        return augment
    import json

    import keras

    layers = augment.layers if isinstance(augment, keras.Sequential) else augment
    layers = layers if isinstance(layers, list | tuple) else [layers]
    described = [{"class_name": type(layer).__name__,
                  "config": {k: v for k, v in layer.get_config().items()
                             if k not in ("name", "dtype")}} for layer in layers]
    return json.loads(json.dumps(described, default=repr))
