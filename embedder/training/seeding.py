"""Reproducible seeding that leaves the caller's random state as it was."""

from __future__ import annotations

import contextlib
import random

import keras
import numpy as np


@contextlib.contextmanager
def seeded(seed):
    """Seed Python, NumPy, TensorFlow and Keras for reproducible training; restore all four.

    ``keras.utils.set_random_seed`` reseeds every global generator, all of which belong
    to the user: Python's and NumPy's states, TensorFlow's global seed and Keras's global
    seed are put back on exit.
    """
    import tensorflow as tf
    from keras.src.backend.common import global_state
    from tensorflow.python.eager import context  # the only reader of TF's global seed

    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    tf_seed = context.global_seed()
    keras_seed = global_state.get_global_attribute("global_random_seed")
    keras_generator = global_state.get_global_attribute("global_seed_generator")
    keras.utils.set_random_seed(seed)
    # Keras initializers without a seed draw theirs from the ``random`` module, which
    # every thread shares: in a Dask worker the event loop draws from it too, and the
    # weights came out different. A private generator keeps the draws ours alone.
    from keras.src.random import seed_generator

    shared_random = seed_generator.python_random
    seed_generator.python_random = random.Random(seed)
    try:
        yield
    finally:
        seed_generator.python_random = shared_random
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
        tf.random.set_seed(tf_seed)
        global_state.set_global_attribute("global_random_seed", keras_seed)
        global_state.set_global_attribute("global_seed_generator", keras_generator)
