"""The command line's limits on images: --max-pixels, a bomb in DATA, --image-size."""

import contextlib
import io
import shutil

import pytest

from embedder.data.decoding import DEFAULT_MAX_PIXELS, get_max_pixels, set_max_pixels
from pipelines.cli.main import main
from tests._images import make_shapes, write_image_folder
from tests.reliability.test_image_bombs import BOMBS

TINY = ["--encoder", "small_cnn", "--epochs", "1", "--image-size", "16",
        "--embedding-dim", "8", "--samples-per-class", "4"]


def _error(argv):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    lines = err.getvalue().strip().splitlines()
    assert code == 1 and "Traceback" not in err.getvalue(), err.getvalue()
    assert len(lines[-1]) < 300
    return lines[-1]


@pytest.fixture
def images(tmp_path):
    X, y = make_shapes(4, size=16, n_classes=2)
    write_image_folder(tmp_path / "images", X, y, class_names=["a", "b"])
    yield tmp_path / "images"
    set_max_pixels(DEFAULT_MAX_PIXELS)


def test_bomb_in_data_is_one_line_naming_it(images, tmp_path):
    (images / "a" / "bomb.png").write_bytes(BOMBS["png"]())
    line = _error(["train", images, "--out", tmp_path / "e.keras", *TINY])
    assert line == (f"triplet: error: cannot read image file '{images / 'a' / 'bomb.png'}': "
                    "its header declares 256,000,000 pixels, more than the limit of "
                    "67,108,864 (raise it with --max-pixels or embedder.data.set_max_pixels "
                    "if you trust the file)")


def test_max_pixels_option(images, tmp_path):
    line = _error(["train", images, "--out", tmp_path / "e.keras", "--max-pixels", "255",
                   *TINY])
    assert "img_0000.png': its header declares 256 pixels, more than the limit of 255 " in line
    assert get_max_pixels() == DEFAULT_MAX_PIXELS  # for that command only: main may run again
    assert _error(["train", images, "--out", tmp_path / "e.keras", "--max-pixels", "0"]) == (
        "triplet: error: --max-pixels must be at least 1, got 0")


@pytest.mark.parametrize("command", ["train", "embed"])
def test_image_size_is_bounded(images, tmp_path, command):
    enc = tmp_path / "e.keras"
    if command == "embed":
        shutil.copy(images / "a" / sorted(p.name for p in (images / "a").iterdir())[0], enc)
        argv = ["embed", enc, images, "--out", tmp_path / "e.npy"]
    else:
        argv = ["train", images, "--out", enc]
    line = _error([*argv, "--image-size", "100000"])
    assert line == "triplet: error: --image-size must be between 8 and 4096 pixels, got 100000"
