import zipfile

import keras
import numpy as np
import pytest

from embedder.encoders import (
    ENCODERS,
    available_encoders,
    build_encoder,
    load_encoder,
    register_encoder,
)
from embedder.preprocessing import ChannelAdapter


def _check_unit_rows(model, images, dim):
    out = model(images, training=False)
    out = keras.ops.convert_to_numpy(out)
    assert out.dtype == np.float32 and out.shape == (len(images), dim)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    return out


def _images(n, shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype(np.float32)


BUILT_IN = ["mobilenet_v2", "resnet50", "seed_cnn", "small_cnn"]


def test_registry():
    # tests/conftest.py may register tiny test encoders too
    assert set(BUILT_IN) <= set(available_encoders())
    assert available_encoders() == sorted(ENCODERS)


@pytest.mark.parametrize("name", ["seed_cnn", "small_cnn"])
@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (112, 112, 3), (20, 12, 4)])
def test_cnn_encoders_give_unit_norm_float32_rows(name, shape):
    model = build_encoder(name, input_shape=shape, embedding_dim=16)
    assert model.name == f"{name}_encoder"
    assert tuple(model.input_shape) == (None, None, None, shape[-1])
    _check_unit_rows(model, _images(3, shape), 16)
    # a different image size is resized inside the model
    _check_unit_rows(model, _images(2, (40, 30, shape[-1])), 16)


def _backbone(model):
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet50"])
def test_application_encoders_tiny_forward(name):
    model = build_encoder(name, input_shape=(8, 8, 1), embedding_dim=8)
    assert model.name == f"{name}_encoder"
    assert _backbone(model).input_shape == (None, 32, 32, 3)  # upsampled to the minimum
    _check_unit_rows(model, _images(2, (8, 8, 1)), 8)


def test_application_backbone_loads_local_weights_file(tmp_path):
    model = build_encoder("mobilenet_v2", input_shape=(8, 8, 3), embedding_dim=4)
    path = tmp_path / "backbone.weights.h5"
    _backbone(model).save_weights(path)
    again = build_encoder("mobilenet_v2", input_shape=(8, 8, 3), embedding_dim=4, weights=path)
    for a, b in zip(_backbone(model).weights, _backbone(again).weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_seed_cnn_has_the_users_layer_structure():
    model = build_encoder("seed_cnn", input_shape=(112, 112, 3), embedding_dim=128)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds[:3] == ["InputLayer", "Resizing", "Rescaling"]
    block = ["Conv2D", "MaxPooling2D", "BatchNormalization", "ReLU"]
    assert kinds[3:] == block * 5 + ["GlobalAveragePooling2D", "Dense", "UnitNormalization"]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [16, 32, 64, 128, 256]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" for c in convs)
    assert model.get_layer("embedding").units == 128
    assert model.get_layer("preprocess_resize").height == 112
    # an 8x8 grey input is upsampled to the 32 px five poolings need, and kept grey
    small = build_encoder("seed_cnn", input_shape=(8, 8, 1), embedding_dim=4)
    assert small.get_layer("preprocess_resize").height == 32
    assert small.get_layer("block1_conv").kernel.shape == (3, 3, 1, 16)


def test_small_cnn_structure():
    model = build_encoder("small_cnn", input_shape=(8, 8, 1), embedding_dim=32)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 64, 128, 256]
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert len(pools) == 3
    assert model.get_layer("preprocess_resize").height == 16  # 8x8 upsampled: 2x2 at the end
    assert model.get_layer("block4_conv").output.shape == (None, 2, 2, 256)
    assert build_encoder("small_cnn", (28, 28, 1)).get_layer("preprocess_resize").width == 28


def test_rgba_is_converted_inside():
    model = build_encoder("small_cnn", input_shape=(16, 16, 4), embedding_dim=8)
    assert isinstance(model.get_layer("preprocess_channels"), ChannelAdapter)
    rgba = _images(2, (16, 16, 4))
    rgb_alpha_changed = rgba.copy()
    rgb_alpha_changed[..., 3] = 0
    np.testing.assert_allclose(
        _check_unit_rows(model, rgba, 8), _check_unit_rows(model, rgb_alpha_changed, 8)
    )


def test_saved_encoder_reloads_and_takes_another_size(tmp_path):
    model = build_encoder("small_cnn", input_shape=(28, 28, 1), embedding_dim=8)
    images = _images(3, (28, 28, 1))
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    path = tmp_path / "enc.keras"
    model.save(path)
    loaded = load_encoder(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(images, training=False)), expected, atol=1e-5
    )
    _check_unit_rows(loaded, _images(2, (64, 50, 1)), 8)


def test_load_encoder_errors(tmp_path):
    with pytest.raises(ValueError, match=r"encoder file '.*nope\.keras' does not exist"):
        load_encoder(tmp_path / "nope.keras")
    text = tmp_path / "text.keras"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"encoder file '.*text\.keras' is not a Keras model"):
        load_encoder(text)
    empty_zip = tmp_path / "zip.keras"
    with zipfile.ZipFile(empty_zip, "w") as zf:
        zf.writestr("readme.txt", "no model here")
    with pytest.raises(ValueError, match=r"encoder file '.*zip\.keras' is not a loadable"):
        load_encoder(empty_zip)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "vgg"}, r"encoder must be one of \[.*'mobilenet_v2', 'resnet50', 'seed_cnn', "
         r"'small_cnn'.*\], got 'vgg'"),
        ({"input_shape": (28, 28)}, r"input_shape must be 3 positive integers.*got \(28, 28\)"),
        ({"input_shape": (28, 28, 2)}, r"input_shape must .*channels in \[1, 3, 4\].*2\)"),
        ({"input_shape": (28.5, 28, 1)}, r"input_shape must .*got \(28.5, 28, 1\)"),
        ({"input_shape": "abc"}, r"input_shape must .*got 'abc'"),
        ({"embedding_dim": 0}, "embedding_dim must be a positive integer, got 0"),
        ({"weights": "imagenet"}, r"weights must be None or the path of an existing local "
         r"weights file \(nothing is downloaded\), got 'imagenet'"),
    ],
)
def test_build_encoder_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_encoder(**kwargs)


def test_weights_file_round_trip_and_bad_file(tmp_path):
    model = build_encoder("small_cnn", input_shape=(16, 16, 1), embedding_dim=4)
    path = tmp_path / "enc.weights.h5"
    model.save_weights(path)
    again = build_encoder("small_cnn", input_shape=(16, 16, 1), embedding_dim=4, weights=path)
    images = _images(2, (16, 16, 1))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(again(images)), keras.ops.convert_to_numpy(model(images))
    )
    bad = tmp_path / "bad.weights.h5"
    bad.write_text("not weights")
    with pytest.raises(ValueError, match=r"weights file '.*bad\.weights\.h5' could not be"):
        build_encoder("small_cnn", input_shape=(16, 16, 1), embedding_dim=4, weights=bad)


def test_mixed_precision_output_is_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_encoder("small_cnn", input_shape=(16, 16, 3), embedding_dim=8)
        assert model.get_layer("embedding").compute_dtype == "float16"
        _check_unit_rows(model, _images(2, (16, 16, 3)), 8)
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.config.dtype_policy().name == previous.name


def test_register_custom_encoder():
    from embedder.encoders import embedding_head
    from embedder.preprocessing import preprocess

    @register_encoder("tiny_test")
    def _tiny(inputs, *, input_shape, embedding_dim, weights):
        x = preprocess(inputs, size=(8, 8), channels=3)
        return embedding_head(keras.layers.GlobalAveragePooling2D()(x), embedding_dim)

    try:
        model = build_encoder("tiny_test", input_shape=(8, 8, 1), embedding_dim=3)
        _check_unit_rows(model, _images(2, (8, 8, 1)), 3)
    finally:
        ENCODERS.pop("tiny_test")
    with pytest.raises(ValueError, match="name must be a non-empty string, got ''"):
        register_encoder("")
