"""SIGINT at any point of ``triplet train``: exit 130, "interrupted", nothing half-written,
and the checkpoint folder resumes."""

import contextlib
import importlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._images import make_shapes, write_image_folder

ROOT = Path(__file__).resolve().parents[2]
cli_main = importlib.import_module("pipelines.cli.main")  # the package exports main()
TINY = ["--encoder", "small_cnn", "--image-size", "16", "--embedding-dim", "8",
        "--samples-per-class", "4"]


def test_an_interrupt_caught_by_library_code_still_exits_130(monkeypatch):
    def swallowing_train(args):  # as a __del__ or a callback that ignores exceptions would
        with contextlib.suppress(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        return 0

    monkeypatch.setattr(cli_main._cli_train, "train", swallowing_train)
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = cli_main.main(["train", "data", "--out", "e.keras"])
    assert code == 130 and err.getvalue() == "triplet: interrupted\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("sigint")
    X, y = make_shapes(8, size=16, n_classes=3)
    write_image_folder(root / "images", X, y)
    return root / "images"


def _train(images, out, checkpoints, epochs):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines", "train", str(images), "--out", str(out),
         "--checkpoint-dir", str(checkpoints), "--epochs", str(epochs), *TINY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


#: TensorFlow 2.21 sometimes aborts inside its own C++ code when the training it runs is
#: interrupted (glibc "free(): invalid next size", exit -6, before our handler prints
#: anything; seen in about 1 run in 5 of this file on 2 cores). That is a TensorFlow
#: crash, not a result of ours: the scenario is run again, up to this many times, and
#: every other outcome fails at once.
NATIVE_ABORT_ATTEMPTS = 3


def _interrupt_after(start, marker, delay):
    """Start a run with ``start()``, send SIGINT ``delay`` s after the first stdout line
    containing ``marker``; ``(exit code, stderr)``, retried only on a native abort."""
    for _ in range(NATIVE_ABORT_ATTEMPTS):
        process = start()
        for line in process.stdout:
            if marker in line:
                time.sleep(delay)
                process.send_signal(signal.SIGINT)
                break
        _, err = process.communicate(timeout=120)
        if process.returncode != -signal.SIGABRT:
            break
    return process.returncode, err


@pytest.mark.parametrize("marker, delay", [
    ("DATA", 0.0),  # data loaded, before the first epoch
    ("Epoch 2/", 0.4),  # mid-epoch (the resume test below interrupts after a backup)
])
def test_sigint_at_several_points_of_train(images, tmp_path, marker, delay):
    out, checkpoints = tmp_path / "e.keras", tmp_path / "ck"
    code, err = _interrupt_after(lambda: _train(images, out, checkpoints, 200), marker, delay)
    assert code == 130, err
    assert err.strip().splitlines()[-1] == "triplet: interrupted"
    assert not out.exists()  # no model from an interrupted run
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []  # nothing half-written at a final name or beside it


def test_checkpoint_of_an_interrupted_run_resumes(images, tmp_path):
    out, checkpoints = tmp_path / "e.keras", tmp_path / "ck"
    code, err = _interrupt_after(lambda: _train(images, out, checkpoints, 4), "Epoch 2/", 0.0)
    assert code == 130, err  # after the backup of epoch 1, as epoch 2 starts
    assert not out.exists()
    resumed = _train(images, out, checkpoints, 4)
    stdout, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "Epoch 1/" not in stdout  # resumed from the backup, not from scratch
    assert out.is_file()
