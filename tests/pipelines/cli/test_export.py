"""``triplet export``: a saved encoder to SavedModel, TFLite or ONNX."""

import contextlib
import io
import re
import sys

import keras
import numpy as np
import pytest

from embedder.models import build_encoder, export
from pipelines.cli import export as cli_export
from pipelines.cli.main import main


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("export") / "enc.keras"
    build_encoder("small_cnn", (16, 16, 3), 8).save(path)
    return path


def test_formats_match_the_library():
    assert cli_export.FORMATS == export.FORMATS


def test_export_tflite_prints_the_check(encoder_file, tmp_path):
    out = tmp_path / "enc.tflite"
    code, stdout, err = _run(["export", encoder_file, "--format", "tflite", "--out", out])
    assert code == 0, err
    difference = float(re.search(r"max abs difference (\S+) from", stdout).group(1))
    assert 0 <= difference <= 1e-4
    assert f"{out.stat().st_size:,} bytes" in stdout and "8-d embeddings" in stdout
    run = export._runner("tflite", out)
    x = np.random.default_rng(0).uniform(0, 255, (2, 20, 12, 3)).astype("float32")
    model = keras.models.load_model(encoder_file)
    np.testing.assert_allclose(run(x), model.predict(x, verbose=0), atol=1e-4)


@pytest.mark.parametrize(("argv", "error"), [
    (["--format", "onnx", "--out", "enc.tflite"],
     "--out must end with .onnx for --format onnx, got 'enc.tflite'"),
    (["--out", "sm", "--atol", "-1"], "--atol must be a non-negative number, got -1.0"),
])
def test_export_errors(encoder_file, argv, error):
    code, _, err = _run(["export", encoder_file, *argv])
    assert code == 1 and err.strip() == f"triplet: error: {error}"


def test_export_needs_a_keras_file(tmp_path):
    code, _, err = _run(["export", tmp_path / "model.joblib", "--out", tmp_path / "sm"])
    assert code == 1
    assert err.strip() == (f"triplet: error: ENCODER must be a .keras encoder file, got "
                           f"'{tmp_path / 'model.joblib'}'")


def test_a_missing_converter_is_a_user_error(encoder_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if not installed
    code, _, err = _run(["export", encoder_file, "--format", "onnx", "--out",
                         tmp_path / "enc.onnx"])
    assert code == 1
    assert err.strip() == ("triplet: error: format='onnx' needs tf2onnx, onnx and "
                           "onnxruntime: pip install 'triplet-embeddings[export]'")
    assert list(tmp_path.iterdir()) == []
