"""Messages name the file or argument, in one line: disk full while streaming, image
channels of arrays, --strategy multi_worker without a cluster, sidecar refusals."""

import contextlib
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def test_file_size_limit_while_streaming_names_the_file(tmp_path):
    code = textwrap.dedent(f"""
        import resource, signal
        import numpy as np
        from pipelines.streaming import write_embeddings
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then write() fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        blocks = (np.ones((1000, 64), np.float32) for _ in range(4))
        try:
            write_embeddings(blocks, 4000, 64, {str(tmp_path / 'e.npy')!r})
        except OSError as exc:
            print(exc)
        """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert run.stdout.strip() == f"[Errno 27] cannot write {tmp_path / 'e.npy'}: File too large"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.parametrize("channels", [2, 5])
def test_frozen_embedder_on_odd_channel_arrays(tmp_path, channels):
    import keras

    from embedder import FrozenEmbedder

    inputs = keras.Input((8, 8, 3))
    keras.Model(inputs, keras.layers.Flatten()(inputs)).save(tmp_path / "e.keras")
    with pytest.raises(ValueError, match=rf"^input_shape must be \(height, width, channels\) "
                       rf"with positive ints and 1, 3 or 4 channels, got \(8, 8, {channels}\) "
                       r"\(the shape of the images in X\)$"):
        FrozenEmbedder(tmp_path / "e.keras").fit(np.zeros((4, 8, 8, channels), np.float32))


def test_multi_worker_strategy_without_workers_is_one_line(tmp_path):
    # strategy='multi_worker' trains (embedder.training.multi_worker); without a cluster
    # the CLI says what it needs in one line, before any data is read.
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["train", str(tmp_path / "none"), "--out", str(tmp_path / "e.keras"),
                     "--strategy", "multi_worker"])
    assert code == 1
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("triplet: error: ")
    assert len(lines[0]) < 300 and "worker" in lines[0]


def test_sidecar_refusals_are_short(tmp_path, monkeypatch):
    from sklearn.linear_model import LogisticRegression

    from pipelines import load_pipeline, save_pipeline
    from pipelines.persistence import SIGNING_KEY_ENV

    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    path = save_pipeline(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), tmp_path / "m.joblib")
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ValueError) as info:
        load_pipeline(path)
    assert str(path) in str(info.value)
    assert len(str(info.value)) - len(str(path)) < 260, str(info.value)
