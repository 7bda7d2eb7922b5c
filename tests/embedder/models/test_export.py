"""export_encoder: SavedModel, TFLite and ONNX, each checked against the Keras encoder."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from embedder.models import build_encoder, export, export_encoder, preprocess
from embedder.models.encoders import embedding_head

FILE_SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}


_MISSING = [name for name in ("tf2onnx", "onnx", "onnxruntime")
            if importlib.util.find_spec(name) is None]
needs_onnx = pytest.mark.skipif(
    bool(_MISSING), reason=f"the [export] extra is not installed (missing {_MISSING}): "
                           "pip install '.[export]'")


def randomise_batch_norm(model, seed=0):
    """Moving statistics far from (0, 1), so training-mode BatchNorm would show."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape),
                               rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.5, mean.shape),
                               rng.uniform(0.5, 2.0, var.shape)])
    return model


def _encoder(channels=3):
    keras.utils.set_random_seed(0)
    return randomise_batch_norm(build_encoder("small_cnn", input_shape=(16, 16, channels),
                                              embedding_dim=8))


def _caffe_encoder():
    """BGR channel reversal and the channel means of mode='caffe'."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3), name="images")
    x = preprocess(inputs, size=(16, 16), channels=3, mode="caffe")
    x = keras.layers.Conv2D(4, 3)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return randomise_batch_norm(keras.Model(inputs, embedding_head(x, 8)))


@pytest.fixture(scope="module")
def encoder():
    return _encoder()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (3, h, w, 3)).astype("float32")
            for h, w in ((16, 16), (9, 23), (40, 31))]


def _expected(encoder, batch):
    return keras.ops.convert_to_numpy(encoder(batch, training=False))


def _leftovers(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


def test_savedmodel_matches_and_loads_with_plain_tensorflow(encoder, images, tmp_path):
    import tensorflow as tf

    target = tmp_path / "enc_savedmodel"
    path, diff = export_encoder(encoder, target, "savedmodel", sample=images)
    assert path == target and 0 <= diff <= 1e-4
    loaded = tf.saved_model.load(str(target))
    signature = loaded.signatures["serving_default"]
    for batch in images:
        got = signature(images=tf.constant(batch))["output_0"].numpy()
        np.testing.assert_allclose(got, _expected(encoder, batch), atol=1e-4)
    assert _leftovers(tmp_path) == []


def test_tflite_matches_on_the_default_sample(encoder, tmp_path):
    target = tmp_path / "enc.tflite"
    _, diff = export_encoder(encoder, target, "tflite")  # three image sizes
    assert diff <= 1e-4 and target.stat().st_size > 10_000
    run = export._runner("tflite", target)
    for batch in export.default_sample(encoder):
        assert np.abs(run(batch) - _expected(encoder, batch)).max() <= 1e-4
    assert [b.shape[1:3] for b in export.default_sample(encoder)] == [
        (16, 16), (11, 21), (23, 12)]
    assert _leftovers(tmp_path) == []


@needs_onnx
def test_onnx_runs_in_onnxruntime_without_tensorflow(encoder, images, tmp_path):
    export_encoder(encoder, tmp_path / "enc.onnx", "onnx", sample=images)
    for i, batch in enumerate(images):
        np.save(tmp_path / f"x{i}.npy", batch)
    code = textwrap.dedent(f"""
        import json, sys
        sys.modules["tensorflow"] = None  # importing it would now fail
        import numpy as np, onnxruntime
        session = onnxruntime.InferenceSession("enc.onnx", providers=["CPUExecutionProvider"])
        for i in range({len(images)}):
            x = np.load(f"x{{i}}.npy")
            np.save(f"y{{i}}.npy", session.run(None, {{"images": x}})[0])
        print(json.dumps({{"inputs": [i.name for i in session.get_inputs()],
                          "outputs": [o.name for o in session.get_outputs()],
                          "keras": "keras" in sys.modules}}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "inputs": ["images"], "outputs": ["embeddings"], "keras": False}
    for i, batch in enumerate(images):
        out = np.load(tmp_path / f"y{i}.npy")
        assert np.abs(out - _expected(encoder, batch)).max() <= 1e-4
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(("make", "fmt"), [
    pytest.param(lambda: _encoder(4), "onnx", marks=needs_onnx), (lambda: _encoder(1), "tflite"),
    (_caffe_encoder, "savedmodel"),
])
def test_channel_adapters_and_caffe_offsets_export(make, fmt, tmp_path):
    _, diff = export_encoder(make(), tmp_path / f"enc{FILE_SUFFIX.get(fmt, '')}", fmt)
    assert diff <= 1e-4


@needs_onnx
def test_mismatch_raises_and_keeps_the_previous_export(encoder, images, tmp_path,
                                                        monkeypatch):
    target = tmp_path / "enc.onnx"
    target.write_bytes(b"previous")
    real_runner = export._runner

    def off_by_a_bit(fmt, path):
        run = real_runner(fmt, path)
        return lambda x: run(x) + 1e-3

    monkeypatch.setattr(export, "_runner", off_by_a_bit)
    with pytest.raises(ValueError, match=r"^the onnx export does not match the Keras "
                       r"encoder: max abs difference 0\.001 > atol=0\.0001 on input "
                       r"shape \(3, 16, 16, 3\)$"):
        export_encoder(encoder, target, "onnx", sample=images[:1])
    assert target.read_bytes() == b"previous"
    assert _leftovers(tmp_path) == []
    _, diff = export_encoder(encoder, target, "onnx", sample=images[:1], atol=2e-3)
    assert 9e-4 < diff < 1.1e-3 and target.stat().st_size > 10_000


def test_savedmodel_replaces_an_existing_savedmodel(encoder, images, tmp_path):
    target = tmp_path / "sm"
    export_encoder(encoder, target, "savedmodel", sample=images[:1])
    (target / "stale.txt").write_text("from the old export")
    export_encoder(encoder, target, "savedmodel", sample=images[:1])
    assert (target / "saved_model.pb").is_file() and not (target / "stale.txt").exists()
    assert _leftovers(tmp_path) == []


def test_refuses_to_replace_what_is_not_an_export(encoder, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.png").write_bytes(b"png")
    with pytest.raises(ValueError, match="exists and is not a SavedModel folder"):
        export_encoder(encoder, folder, "savedmodel")
    with pytest.raises(ValueError, match="is a folder; format='onnx' writes a file$"):
        export_encoder(encoder, folder, "onnx")
    assert (folder / "cat.png").read_bytes() == b"png"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"format": "h5"}, r"^format must be one of \['savedmodel', 'tflite', 'onnx'\], "
                       r"got 'h5'$"),
    ({"atol": -1.0}, "^atol must be a non-negative number, got -1.0$"),
    ({"atol": True}, "^atol must be a non-negative number, got True$"),
    ({"sample": np.zeros((2, 8, 8, 1), "float32")},
     r"^sample batches must be \(n, h, w, 3\) arrays with n >= 1, got shape \(2, 8, 8, 1\)$"),
    ({"sample": []}, "^sample must hold at least one batch of images, got none$"),
])
def test_invalid_arguments(encoder, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export_encoder(encoder, tmp_path / "enc.onnx", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_a_saved_encoder_opens_with_plain_keras_after_importing_embedder_models(encoder,
                                                                                 tmp_path):
    """The documented rule: ``import embedder.models`` registers the two custom layers
    (plain ``import embedder`` is lazy and does not); without it Keras names the class
    it cannot find. The exports above need neither."""
    encoder.save(tmp_path / "enc.keras")
    code = textwrap.dedent("""
        import sys
        import keras
        try:
            keras.models.load_model("enc.keras")
        except TypeError as err:
            print("without:", "SafeUnitNormalization" in str(err))
        import embedder
        import embedder.models
        model = keras.models.load_model("enc.keras", safe_mode=True)
        print("with:", model.output_shape)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[-3:-1] == ["without: True", "with: (None, 8)"]
