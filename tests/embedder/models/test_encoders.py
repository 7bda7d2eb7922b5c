import zipfile

import keras
import numpy as np
import pytest

from embedder.models.encoders import (
    ENCODERS,
    SafeUnitNormalization,
    available_encoders,
    build_encoder,
    load_encoder,
    register_encoder,
)
from embedder.models.preprocessing import ChannelAdapter


@pytest.fixture(autouse=True)
def _seeded():
    """Every test here builds models: fixed initial weights make each run the same."""
    keras.utils.set_random_seed(0)


def _check_unit_rows(model, images, dim):
    out = model(images, training=False)
    out = keras.ops.convert_to_numpy(out)
    assert out.dtype == np.float32 and out.shape == (len(images), dim)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    return out


def _images(n, shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype(np.float32)


BUILT_IN = ["mobilenet_v2", "resnet50", "seed_cnn", "small_cnn", "small_resnet"]


def test_registry_lists_the_built_in_encoders_sorted():
    names = available_encoders()
    # tests/conftest.py registers tiny test encoders too
    assert set(BUILT_IN) <= set(names)
    assert names == sorted(names)
    assert "tiny_test" not in names


@pytest.mark.parametrize("name", ["seed_cnn", "small_cnn", "small_resnet"])
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
    out = _check_unit_rows(model, _images(2, (8, 8, 1)), 8)
    assert not np.allclose(out[0], out[1], atol=1e-3)  # different images, different rows


@pytest.mark.parametrize("name", [*BUILT_IN, "tiny_cnn"])
def test_all_zero_and_constant_images_give_unit_rows(name):
    # issue 12.0: a ~0 vector before the normalisation gave rows of norm 0.72 (or 0)
    model = build_encoder(name, input_shape=(8, 8, 1), embedding_dim=8)
    images = np.stack([np.zeros((8, 8, 1)), np.full((8, 8, 1), 255.0)]).astype(np.float32)
    _check_unit_rows(model, images, 8)


def test_safe_unit_normalization_values():
    x = np.array(
        [[0, 0, 0], [1e-30, 0, 0], [3e-37, 4e-37, 0], [3e30, 4e30, 0], [3, -4, 0],
         [np.inf, -np.inf, 7], [-2e-20, 0, 0]],
        dtype=np.float32,
    )
    got = keras.ops.convert_to_numpy(SafeUnitNormalization()(x))
    s = np.sqrt(0.5)
    expected = [[1, 0, 0], [1, 0, 0], [0.6, 0.8, 0], [0.6, 0.8, 0], [0.6, -0.8, 0],
                [s, -s, 0], [-1, 0, 0]]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got.dtype == np.float32
    # float16 input (mixed precision) is normalised in float32
    half = keras.ops.convert_to_numpy(SafeUnitNormalization()(np.float16([[0, 0], [0, 1e-7]])))
    np.testing.assert_array_equal(half, [[1, 0], [0, 1]])


def test_safe_unit_normalization_gradients_are_finite():
    import tensorflow as tf

    x = tf.Variable(np.float32([[0, 0, 0], [3, 4, 0], [1e-20, 0, 0], [1e30, 0, 1e30]]))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(SafeUnitNormalization()(x) * tf.constant([[1.0, 2.0, 3.0]]))
    grad = tape.gradient(loss, x).numpy()
    assert np.isfinite(grad).all()
    np.testing.assert_array_equal(grad[0], 0.0)  # the fixed e_1 of a zero row is constant
    # d/dx (w . x/|x|) at x=(3,4,0), w=(1,2,3): (w - (w.u) u) / |x| with u=(0.6,0.8,0)
    np.testing.assert_allclose(grad[1], [-0.064, 0.048, 0.6], atol=1e-6)


def test_application_backbone_loads_local_weights_file(tmp_path):
    model = build_encoder("mobilenet_v2", input_shape=(8, 8, 3), embedding_dim=4)
    path = tmp_path / "backbone.weights.h5"
    _backbone(model).save_weights(path)
    again = build_encoder("mobilenet_v2", input_shape=(8, 8, 3), embedding_dim=4, weights=path)
    for a, b in zip(_backbone(model).weights, _backbone(again).weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_small_resnet_is_four_residual_stages():
    model = build_encoder("small_resnet", input_shape=(64, 64, 3), embedding_dim=128)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert [a.name for a in adds] == [f"stage{i}_add" for i in range(1, 5)]
    # 64 px: the stem pooling and three strided stages leave a 4 x 4 map of 256 channels
    assert tuple(model.get_layer("stage4_relu2").output.shape) == (None, 4, 4, 256)
    # stage 1 keeps its width (identity shortcut); the others change it (1 x 1 projection)
    names = {layer.name for layer in model.layers}
    assert "stage1_short_conv" not in names
    assert {f"stage{i}_short_conv" for i in (2, 3, 4)} <= names
    assert model.count_params() == 1_262_176


def test_seed_cnn_has_the_users_layer_structure():
    model = build_encoder("seed_cnn", input_shape=(112, 112, 3), embedding_dim=128)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds[:3] == ["InputLayer", "Resizing", "Rescaling"]
    block = ["Conv2D", "MaxPooling2D", "BatchNormalization", "ReLU"]
    assert kinds[3:] == block * 5 + ["GlobalAveragePooling2D", "Dense", "SafeUnitNormalization"]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [16, 32, 64, 128, 256]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" for c in convs)
    assert model.get_layer("embedding").units == 128
    assert model.get_layer("preprocess_resize").height == 112
    # an 8x8 grey input is upsampled to the 32 px five poolings need, and kept grey
    small = build_encoder("seed_cnn", input_shape=(8, 8, 1), embedding_dim=4)
    assert small.get_layer("preprocess_resize").height == 32
    assert small.get_layer("block1_conv").kernel.shape == (3, 3, 1, 16)


def test_small_inputs_keep_a_non_empty_final_feature_map():
    # the resizing claims of the docstrings: 8x8 grey digits must not pool down to 0x0
    small = build_encoder("small_cnn", input_shape=(8, 8, 1), embedding_dim=32)
    assert small.get_layer("block4_conv").output.shape == (None, 2, 2, 256)
    seed = build_encoder("seed_cnn", input_shape=(8, 8, 1), embedding_dim=4)
    assert seed.get_layer("block5_pool").output.shape == (None, 1, 1, 256)
    assert build_encoder("small_cnn", (28, 28, 1)).get_layer("preprocess_resize").width == 28


def test_embedding_of_an_image_does_not_depend_on_its_batch():
    model = build_encoder("small_cnn", input_shape=(16, 16, 3), embedding_dim=8)
    images = _images(4, (16, 16, 3))
    together = keras.ops.convert_to_numpy(model(images, training=False))
    alone = keras.ops.convert_to_numpy(model(images[2:3], training=False))
    np.testing.assert_allclose(alone[0], together[2], atol=1e-5)


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
    images[0] = 0.0
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    path = tmp_path / "enc.keras"
    model.save(path)
    loaded = load_encoder(path)
    assert isinstance(loaded.get_layer("l2_normalize"), SafeUnitNormalization)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(images, training=False)), expected, atol=1e-5
    )
    _check_unit_rows(loaded, _images(2, (64, 50, 1)), 8)
    # safe mode (used for untrusted .skops pipelines) loads the registered layer too
    again = keras.saving.load_model(path, compile=False, safe_mode=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(again(images, training=False)), expected, atol=1e-5
    )


def test_load_encoder_refuses_code_in_safe_mode(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ValueError, match=r"^encoder file '.*lambda\.keras' is refused by Keras's "
                       r"safe mode \(a `Lambda` layer whose `function` is a Python lambda: its "
                       r"code would run\); use safe_mode=False only if you trust its author$"):
        load_encoder(path)
    loaded = load_encoder(path, safe_mode=False)  # the caller trusts the file
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(np.ones((1, 4)))), 2.0)


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
    with pytest.raises(ValueError, match=r"^encoder file '.*zip\.keras': Keras could not rebuild "
                       r"the model from it \(There is no item named 'config\.json' in the "
                       r"archive\)$"):
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
        ({"weights": "imagenet"}, r"weights='imagenet' is only for Keras Applications "
         r"backbones \(mobilenet_v2, resnet50\), got encoder='seed_cnn'"),
        ({"weights": "nope.h5"}, r"weights must be None, 'imagenet' or the path of an "
         r"existing local weights file, got 'nope.h5'"),
    ],
)
def test_build_encoder_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_encoder(**kwargs)


def test_offline_imagenet_error_names_the_cache_file(monkeypatch):
    from embedder.models.encoders import _imagenet_unavailable

    monkeypatch.setenv("KERAS_HOME", "/cache/keras")
    err = Exception("URL fetch failure on https://storage.googleapis.com/x/resnet50_notop.h5:"
                    " None -- [Errno -2] Name or service not known")
    assert _imagenet_unavailable(err).endswith(
        "offline, copy the Keras Applications weights file to "
        "/cache/keras/models/resnet50_notop.h5")


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
    from embedder.models.encoders import embedding_head
    from embedder.models.preprocessing import preprocess

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
