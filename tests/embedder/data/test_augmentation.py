"""The augmentation presets, the user's own layers and the ``augment`` setting."""

import copy
import json
import pickle

import keras
import numpy as np
import pytest
from sklearn.base import clone

from embedder.data.augmentation import AUGMENTATIONS, build_augmenter, check_augment
from embedder.training import TrainingConfig
from tests._helpers import TINY_SHAPE, tiny_embedder
from tests._images import make_shapes


def _images(n=8):
    return make_shapes(2, size=16, n_classes=n // 2)[0].astype("float32")


def _apply(augment, images, seed=0):
    return np.asarray(build_augmenter(augment, images.shape[1:], seed)(images, training=True))


@pytest.mark.parametrize("preset", sorted(AUGMENTATIONS))
def test_preset_changes_images_and_keeps_shape_dtype_and_range(preset):
    images = _images()
    out = _apply(preset, images)
    assert out.shape == images.shape and out.dtype == np.float32
    assert not np.allclose(out, images)
    assert out.min() >= 0 and out.max() <= 255


@pytest.mark.parametrize("augment", [*sorted(AUGMENTATIONS), True])
def test_augmenter_is_deterministic_given_the_seed(augment):
    images = _images()
    np.testing.assert_array_equal(_apply(augment, images, 3), _apply(augment, images, 3))
    assert not np.allclose(_apply(augment, images, 3), _apply(augment, images, 4))


def test_true_is_the_original_augmenter():
    images = _images()
    original = keras.Sequential([
        keras.layers.RandomFlip("horizontal", seed=5),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=6),
        keras.layers.RandomBrightness(0.2, value_range=(0, 255), seed=7),
    ])
    np.testing.assert_array_equal(_apply(True, images, 5),
                                  np.asarray(original(images, training=True)))


def test_false_builds_nothing():
    assert build_augmenter(False, TINY_SHAPE, 0) is None


def test_digits_never_flips():
    image = np.zeros((1, 16, 16, 1), np.float32)
    image[0, 4:12, 2:6] = 255  # a bar near the left edge: a flip would put it right
    out = np.asarray(build_augmenter("digits", image.shape[1:], 0)(
        np.repeat(image, 64, 0), training=True))
    left, right = out[:, :, :8].sum(axis=(1, 2, 3)), out[:, :, 8:].sum(axis=(1, 2, 3))
    assert np.all(left > right)


def test_photo_flips_some_images():
    image = np.zeros((1, 16, 16, 1), np.float32)
    image[0, 4:12, 2:6] = 255
    out = np.asarray(build_augmenter("photo", image.shape[1:], 0)(
        np.repeat(image, 64, 0), training=True))
    left, right = out[:, :, :8].sum(axis=(1, 2, 3)), out[:, :, 8:].sum(axis=(1, 2, 3))
    assert np.any(left < right) and np.any(left > right)


@pytest.mark.parametrize("as_sequential", [False, True])
def test_user_layers_are_applied_copied_and_seeded(as_sequential):
    layers = [keras.layers.RandomContrast(0.5, value_range=(0, 255))]
    augment = keras.Sequential(layers) if as_sequential else layers
    images = _images()
    augmenter = build_augmenter(augment, images.shape[1:], 0)
    out = np.asarray(augmenter(images, training=True))
    assert not np.allclose(out, images)
    assert augmenter.layers[0] is not layers[0]  # the user's layer is never advanced
    assert augmenter.layers[0].get_config()["seed"] == 0
    np.testing.assert_array_equal(out, _apply(augment, images, 0))


def test_user_layer_keeps_its_own_seed():
    images = _images()
    mine = [keras.layers.RandomContrast(0.5, value_range=(0, 255), seed=11)]
    assert build_augmenter(mine, images.shape[1:], 0).layers[0].get_config()["seed"] == 11


@pytest.mark.parametrize("bad", ["flowers", 3, [], ["photo"], None])
def test_bad_augment_names_the_setting_and_the_allowed_values(bad):
    expected = (r"augment must be False, True, one of \['photo', 'digits'\] or Keras "
                r"preprocessing layers \(a list or tuple of layers, or a keras.Sequential\), "
                rf"got {repr(bad).replace('[', '.').replace(']', '.')}")
    with pytest.raises(ValueError, match=expected):
        check_augment(bad)
    with pytest.raises(ValueError, match=expected):
        TrainingConfig(augment=bad).validate()


def test_estimator_rejects_a_bad_preset_at_fit():
    X, y = make_shapes(4, size=16, n_classes=3)
    with pytest.raises(ValueError, match="'augment' parameter .* Got 'flowers'"):
        tiny_embedder(augment="flowers").fit(X, y)
    with pytest.raises(ValueError, match="augment must be .* got \\[1\\]"):
        tiny_embedder(augment=[1]).fit(X, y)


def test_estimator_with_user_layers_clones_and_pickles():
    layers = [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.05)]
    est = tiny_embedder(augment=layers)
    for other in (clone(est), pickle.loads(pickle.dumps(est)), copy.deepcopy(est)):
        assert [type(layer) for layer in other.augment] == [type(layer) for layer in layers]
        assert other.augment[0] is not layers[0]


def test_config_to_dict_describes_user_layers_as_json_data():
    config = TrainingConfig(augment=[keras.layers.RandomFlip("horizontal"),
                                     keras.layers.RandomZoom((-0.2, 0.0))])
    flip, zoom = config.to_dict()["augment"]
    assert flip["class_name"] == "RandomFlip" and flip["config"]["mode"] == "horizontal"
    assert zoom["config"]["height_factor"] == [-0.2, 0.0]  # as a checkpoint reads it back
    assert json.loads(json.dumps(config.to_dict()["augment"])) == [flip, zoom]
    assert TrainingConfig(augment="photo").to_dict()["augment"] == "photo"


def test_fit_with_photo_preset_is_reproducible():
    X, y = make_shapes(6, size=16, n_classes=3)
    first = tiny_embedder(augment="photo", epochs=1).fit(X, y).transform(X)
    again = tiny_embedder(augment="photo", epochs=1).fit(X, y).transform(X)
    plain = tiny_embedder(epochs=1).fit(X, y).transform(X)
    assert first.shape == (len(X), 8)
    np.testing.assert_allclose(first, again, rtol=1e-5, atol=1e-6)
    assert not np.allclose(first, plain)  # the augmenter ran in training


def test_fit_with_a_user_sequential():
    X, y = make_shapes(6, size=16, n_classes=3)
    augment = keras.Sequential([keras.layers.RandomRotation(0.05)])
    est = tiny_embedder(augment=augment, epochs=1).fit(X, y)
    np.testing.assert_array_equal(est.transform(X[:4]), est.transform(X[:4]))
    assert not augment.built  # the user's object is copied, never built or advanced
