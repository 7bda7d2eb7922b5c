import numpy as np
import pytest

from embedder.data.fingerprints import image_fingerprints, overlap
from tests._images import make_shapes, write_image_folder


def test_dtype_independent_and_distinct():
    X, _ = make_shapes(4, size=8)
    a = image_fingerprints(X)
    b = image_fingerprints(X.astype(np.float32))
    assert a.shape == (20,)
    np.testing.assert_array_equal(a, b)
    assert len(set(a)) == 20
    # a 2-D (flattened) copy of the same images has the same fingerprints
    np.testing.assert_array_equal(a, image_fingerprints(X.reshape(len(X), -1)))


def test_paths_hash_content(tmp_path):
    X, y = make_shapes(2, size=8)
    paths = write_image_folder(tmp_path / "a", X, y)
    copies = write_image_folder(tmp_path / "b", X, y)
    assert overlap(image_fingerprints(paths), image_fingerprints(copies)) == 10
    assert overlap(image_fingerprints(paths[:3]), image_fingerprints(copies[3:])) == 0


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot read image file '.*missing.png'"):
        image_fingerprints([str(tmp_path / "missing.png")])
    with pytest.raises(ValueError, match=r"X must be a list of image paths .* got shape \(3,\)"):
        image_fingerprints(np.zeros(3))
