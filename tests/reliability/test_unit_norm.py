"""Issue 12.0: every embedding row has unit norm, also for all-zero images."""

import warnings

import numpy as np

from tests._helpers import TINY_SHAPE, tiny_embedder


def test_training_on_all_zero_images_gives_unit_rows():
    X = np.zeros((12, *TINY_SHAPE), np.uint8)
    y = np.repeat([0, 1], 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the collapse detector rightly complains
        Z = tiny_embedder(epochs=1, random_state=0).fit(X, y).transform(X)
    assert Z.shape == (12, 8) and Z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-6)
