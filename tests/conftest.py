"""Shared test set-up: quiet TensorFlow, and tiny encoders so training tests take seconds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

from embedder.encoders import embedding_head, register_encoder  # noqa: E402
from embedder.preprocessing import preprocess, target_size  # noqa: E402


@register_encoder("tiny_cnn")
def _tiny_cnn(inputs, *, input_shape, embedding_dim, weights):
    """Two small conv blocks: enough to separate synthetic shapes in a few epochs."""
    x = preprocess(inputs, size=target_size(input_shape, 8), channels=min(input_shape[-1], 3))
    for filters in (8, 16):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return embedding_head(x, embedding_dim)


@register_encoder("collapsed_cnn")
def _collapsed_cnn(inputs, *, input_shape, embedding_dim, weights):
    """Every image maps to the same embedding: a forced collapse for the detector."""
    x = preprocess(inputs, size=target_size(input_shape, 8), channels=min(input_shape[-1], 3))
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(
        embedding_dim, kernel_initializer="zeros", bias_initializer="ones", name="embedding"
    )(x)
    return keras.layers.UnitNormalization(dtype="float32")(x)


@pytest.fixture(scope="session")
def shapes16():
    from tests._images import make_shapes

    return make_shapes(24, size=16)
