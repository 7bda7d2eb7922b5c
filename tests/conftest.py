"""Shared test set-up: quiet TensorFlow, and tiny encoders so training tests take seconds.

Nothing here imports TensorFlow at module level: under pytest-xdist the controller process
loads this file too, and it runs no test.
"""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session", autouse=True)
def _register_test_encoders():
    """Register ``tiny_cnn`` and ``collapsed_cnn`` for the tests."""
    from embedder.models.encoders import ENCODERS, register_encoder

    register_encoder("tiny_cnn")(_tiny_cnn)
    register_encoder("collapsed_cnn")(_collapsed_cnn)
    yield
    ENCODERS.pop("tiny_cnn", None)
    ENCODERS.pop("collapsed_cnn", None)


def _tiny_cnn(inputs, *, input_shape, embedding_dim, weights):
    """Two small conv blocks: enough to separate synthetic shapes in a few epochs."""
    import keras

    from embedder.models.encoders import embedding_head
    from embedder.models.preprocessing import preprocess, target_size

    x = preprocess(inputs, size=target_size(input_shape, 8), channels=min(input_shape[-1], 3))
    for filters in (8, 16):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return embedding_head(x, embedding_dim)


def _collapsed_cnn(inputs, *, input_shape, embedding_dim, weights):
    """Every image maps to the same embedding: a forced collapse for the detector."""
    import keras

    from embedder.models.preprocessing import preprocess, target_size

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
