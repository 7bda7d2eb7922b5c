import keras
import numpy as np
import pytest

from embedder.models.preprocessing import (
    ChannelAdapter,
    check_input_shape,
    convert_channels,
    preprocess,
    target_size,
)

PIXEL = np.array([[[[10.0, 20.0, 30.0, 99.0]]]], np.float32)  # one RGBA pixel


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize(
    ("source", "channels", "expected"),
    [
        (PIXEL[..., :1], 3, [10, 10, 10]),  # grey -> RGB by tiling
        (PIXEL, 3, [10, 20, 30]),  # RGBA -> RGB drops alpha
        (PIXEL[..., :3], 1, [0.299 * 10 + 0.587 * 20 + 0.114 * 30]),  # luminance
        (PIXEL, 1, [0.299 * 10 + 0.587 * 20 + 0.114 * 30]),
        (PIXEL[..., :2], 1, [10]),  # grey + alpha
        (PIXEL[..., :3], 4, [10, 20, 30, 255]),  # opaque alpha added
        (PIXEL[..., :3], 3, [10, 20, 30]),
    ],
)
def test_convert_channels_literal_values(source, channels, expected):
    out = _np(convert_channels(keras.ops.convert_to_tensor(source), channels))
    np.testing.assert_allclose(out[0, 0, 0], expected, rtol=1e-6)


def test_grey_stays_grey_through_rgb_round_trip():
    grey = np.full((1, 2, 2, 1), 255.0, np.float32)
    back = convert_channels(convert_channels(keras.ops.convert_to_tensor(grey), 3), 1)
    np.testing.assert_allclose(_np(back), grey, rtol=1e-6)


def test_channel_adapter_layer_bgr_and_config():
    layer = ChannelAdapter(3, order="bgr")
    np.testing.assert_allclose(_np(layer(PIXEL))[0, 0, 0], [30, 20, 10])
    again = ChannelAdapter.from_config(layer.get_config())
    assert (again.channels, again.order) == (3, "bgr")
    assert layer.compute_output_shape((None, 5, 5, 4)) == (None, 5, 5, 3)
    with pytest.raises(ValueError, match=r"order must be one of \['bgr', 'rgb'\], got 'rbg'"):
        ChannelAdapter(3, order="rbg")
    with pytest.raises(ValueError, match=r"channels must be one of \[1, 3, 4\], got 2"):
        ChannelAdapter(2)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("unit", [10 / 255, 20 / 255, 30 / 255]),
        ("symmetric", [10 / 127.5 - 1, 20 / 127.5 - 1, 30 / 127.5 - 1]),
        ("caffe", [30 - 103.939, 20 - 116.779, 10 - 123.68]),  # BGR minus ImageNet means
    ],
)
def test_preprocess_modes(mode, expected):
    inputs = keras.Input((None, None, 4))
    model = keras.Model(inputs, preprocess(inputs, size=(3, 2), channels=3, mode=mode))
    out = _np(model(np.broadcast_to(PIXEL, (1, 5, 7, 4))))
    assert out.shape == (1, 3, 2, 3)  # resized to `size`
    np.testing.assert_allclose(out[0, 1, 1], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"mode must be one of .*got 'torch'"):
        preprocess(inputs, size=(3, 2), mode="torch")


def test_target_size_and_check_input_shape():
    assert target_size((8, 40, 1), 32) == (32, 40)
    assert target_size((112, 112, 3), 32) == (112, 112)
    assert check_input_shape([28, np.int64(28), 1.0]) == (28, 28, 1)
    for bad in [(28, 28), (0, 28, 1), (28, 28, 5), None, (28.5, 28, 1)]:
        with pytest.raises(ValueError, match=r"input_shape must be 3 positive integers"):
            check_input_shape(bad)


def test_preprocessing_layers_survive_keras_save(tmp_path):
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, preprocess(inputs, size=(4, 4), channels=3, mode="caffe"))
    model.save(tmp_path / "pre.keras")
    loaded = keras.saving.load_model(tmp_path / "pre.keras")
    images = np.random.default_rng(0).uniform(0, 255, (2, 6, 5, 1)).astype(np.float32)
    np.testing.assert_allclose(_np(loaded(images)), _np(model(images)), rtol=1e-6)
    assert isinstance(loaded.get_layer("preprocess_channels"), ChannelAdapter)


def _bn_moving_statistics(model):
    return [w.copy() for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)
            for w in layer.get_weights()[2:]]


def test_calling_an_encoder_runs_batch_norm_in_inference_mode(tmp_path):
    """Regression: Resizing's training=True default leaked into ``encoder(x)``."""
    from embedder.models import build_encoder, load_encoder

    keras.utils.set_random_seed(0)
    encoder = build_encoder("small_cnn", input_shape=(16, 16, 3), embedding_dim=8)
    rng = np.random.default_rng(0)
    for layer in encoder.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma, beta, rng.normal(0, 0.5, mean.shape),
                               rng.uniform(0.5, 2.0, var.shape)])
    x = rng.integers(0, 256, (4, 16, 16, 3)).astype("float32")
    encoder.save(tmp_path / "enc.keras")
    for model in (encoder, load_encoder(tmp_path / "enc.keras")):
        before = _bn_moving_statistics(model)
        np.testing.assert_allclose(_np(model(x)), model.predict(x, verbose=0), atol=1e-6)
        for old, new in zip(before, _bn_moving_statistics(model), strict=True):
            np.testing.assert_array_equal(old, new)
        # training=True still trains: batch statistics, not the moving ones
        assert np.abs(_np(model(x, training=True)) - _np(model(x))).max() > 1e-2
