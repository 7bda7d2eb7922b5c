"""Reproducible seeding and byte (de)serialisation of Keras models for pickling."""

from __future__ import annotations

import contextlib
import random
import tempfile
from numbers import Integral
from pathlib import Path

import keras
import numpy as np
from sklearn.utils import check_random_state


def seed_from(random_state):
    """An int seed from an sklearn ``random_state`` (int, RandomState or None)."""
    if isinstance(random_state, Integral):
        return int(random_state)
    return int(check_random_state(random_state).randint(2**31 - 1))


@contextlib.contextmanager
def seeded(seed):
    """Seed Keras/TF for reproducible training; restore Python's and NumPy's global RNGs.

    ``keras.utils.set_random_seed`` also reseeds NumPy's legacy global generator, which
    belongs to the user: its state is put back on exit.
    """
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002


def model_to_bytes(model):
    """The ``.keras`` archive of ``model`` as bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "encoder.keras"
        model.save(path)
        return path.read_bytes()


def model_from_bytes(data):
    """Inverse of :func:`model_to_bytes` (uncompiled: encoders are used for inference)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "encoder.keras"
        path.write_bytes(data)
        return keras.saving.load_model(path, compile=False)
