import random

import keras
import numpy as np

from embedder.training import seed_from, seeded


def test_seeded_makes_weights_reproducible():
    with seeded(3):
        a = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4)]).get_weights()[0]
    with seeded(3):
        b = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4)]).get_weights()[0]
    np.testing.assert_array_equal(a, b)


def test_seeded_restores_every_global_generator():
    import tensorflow as tf
    from keras.src.backend.common import global_state
    from tensorflow.python.eager import context

    random.seed(11)
    np.random.seed(11)  # noqa: NPY002
    tf.random.set_seed(11)
    keras_seed = global_state.get_global_attribute("global_random_seed")
    expected_py = random.Random(11).random()
    expected_np = np.random.RandomState(11).rand()  # noqa: NPY002
    with seeded(0):
        random.random()
        np.random.rand()  # noqa: NPY002
    assert random.random() == expected_py
    assert np.random.rand() == expected_np  # noqa: NPY002
    assert context.global_seed() == 11
    assert global_state.get_global_attribute("global_random_seed") == keras_seed


def test_seed_from():
    assert seed_from(5) == 5
    assert seed_from(np.random.RandomState(0)) == seed_from(np.random.RandomState(0))  # noqa: NPY002
    assert 0 <= seed_from(None) < 2**31
