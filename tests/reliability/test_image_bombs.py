"""Image bombs: tiny files whose header declares 16000 x 16000 pixels, in every format.

Each is refused from its header, before TensorFlow or Pillow allocate the pixels, both
by ``read_image`` (Pillow) and inside the ``tf.data`` pipeline (TensorFlow's decoders for
PNG, JPEG and GIF), and a subprocess shows the peak memory stays near a normal run's.
"""

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedder.data import image_batches, iterate_batches, read_image
from embedder.data.decoding import (
    DEFAULT_MAX_PIXELS,
    check_pixels,
    get_max_pixels,
    set_max_pixels,
)

SIDE = 16000
ROOT = Path(__file__).resolve().parents[2]


def _small(fmt, **kwargs):
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(buf, fmt, **kwargs)
    return bytearray(buf.getvalue())


def _png():
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    rows = zlib.compress(b"\0" * (SIDE + 1) * 64)  # 64 rows of the 16000 declared
    ihdr = struct.pack(">IIBBBBB", SIDE, SIDE, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows)
            + chunk(b"IEND", b""))


def _jpeg():
    data = _small("JPEG")
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", SIDE, SIDE)
    return bytes(data)


def _gif():
    data = _small("GIF")
    data[6:10] = struct.pack("<HH", SIDE, SIDE)  # logical screen
    desc = data.index(b"\x2c", 13)  # image descriptor: the frame as large as the screen
    data[desc + 5:desc + 9] = struct.pack("<HH", SIDE, SIDE)
    return bytes(data)


def _webp():
    data = _small("WEBP", lossless=True)
    start = data.index(b"VP8L") + 9  # chunk header (8) and the 0x2f signature
    bits = struct.unpack("<I", data[start:start + 4])[0] & ~((1 << 28) - 1)
    bits |= (SIDE - 1) | ((SIDE - 1) << 14)
    data[start:start + 4] = struct.pack("<I", bits)
    return bytes(data)


def _bmp():
    data = _small("BMP")
    data[18:26] = struct.pack("<ii", SIDE, SIDE)
    return bytes(data)


def _tiff():
    data = _small("TIFF", compression="tiff_deflate")
    assert data[:2] == b"II"
    ifd = struct.unpack("<I", data[4:8])[0]
    for k in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * k
        tag, kind = struct.unpack("<HH", data[entry:entry + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength
            fmt = "<H" if kind == 3 else "<I"
            data[entry + 8:entry + 8 + struct.calcsize(fmt)] = struct.pack(fmt, SIDE)
    return bytes(data)


BOMBS = {"png": _png, "jpg": _jpeg, "gif": _gif, "webp": _webp, "bmp": _bmp, "tiff": _tiff}


def _write_bombs(folder):
    paths = {}
    for ext, make in BOMBS.items():
        paths[ext] = folder / f"bomb.{ext}"
        paths[ext].write_bytes(make())
    return paths


def _message(path):
    return (rf"^cannot read image file '{path}': its header declares (16000 x 16000 = )?"
            r"256,000,000 pixels, more than the limit of 67,108,864 \(raise it with "
            r"--max-pixels or embedder\.data\.set_max_pixels if you trust the file\)$")


@pytest.mark.parametrize("ext", sorted(BOMBS))
def test_bomb_refused_from_its_header(tmp_path, ext):
    path = _write_bombs(tmp_path)[ext]
    assert path.stat().st_size < 64 * 1024
    assert get_max_pixels() == DEFAULT_MAX_PIXELS
    with pytest.raises(ValueError, match=_message(path)):
        check_pixels(path)
    with pytest.raises(ValueError, match=_message(path)):
        read_image(path, (16, 16, 3))
    with pytest.raises(ValueError, match=_message(path)):  # TensorFlow's decoder for PNG/JPEG/GIF
        list(iterate_batches(image_batches([str(path)], (16, 16, 3))))


def test_gif_frames_count(tmp_path):
    frames = [Image.fromarray(np.full((64, 64), v, np.uint8)) for v in (0, 80, 160, 240)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    set_max_pixels(64 * 64 * 3)
    try:
        with pytest.raises(ValueError, match=r"declares 4 frames of 64 x 64 = 16,384 pixels, "
                           r"more than the limit of 12,288 "):
            list(iterate_batches(image_batches([str(tmp_path / "anim.gif")], (16, 16, 3))))
    finally:
        set_max_pixels(DEFAULT_MAX_PIXELS)
    got = list(iterate_batches(image_batches([str(tmp_path / "anim.gif")], (16, 16, 3))))
    assert got[0].shape == (1, 16, 16, 3)


def test_budget_is_configurable(tmp_path):
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "a.png")
    set_max_pixels(1999)
    try:
        assert Image.MAX_IMAGE_PIXELS == 1999
        with pytest.raises(ValueError, match=r"declares (50 x 40 = )?2,000 pixels, more than "
                           r"the limit of 1,999 "):
            list(iterate_batches(image_batches([str(tmp_path / "a.png")], (16, 16, 1))))
        set_max_pixels(2000)
        assert read_image(tmp_path / "a.png", (16, 16, 1)).shape == (16, 16, 1)
    finally:
        set_max_pixels(DEFAULT_MAX_PIXELS)
    for bad in (0, -5, 2.5, True, "9"):
        with pytest.raises(ValueError, match=rf"^max_pixels must be a positive integer, "
                           rf"got {bad!r}$".replace("(", r"\(")):
            set_max_pixels(bad)


_PEAK = """
import json, resource, sys
from embedder.data import image_batches, iterate_batches
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
list(iterate_batches(image_batches([sys.argv[1]] * 8, (112, 112, 3))))
out = {"normal": peak()}
for path in sys.argv[2:]:
    try:
        list(iterate_batches(image_batches([path], (112, 112, 3))))
        out[path] = "decoded"
    except ValueError:
        out[path] = peak()
print(json.dumps(out))
"""


def test_bomb_peak_memory_stays_near_a_normal_run(tmp_path):
    paths = _write_bombs(tmp_path)
    normal = tmp_path / "normal.png"
    Image.fromarray(np.full((112, 112, 3), 7, np.uint8)).save(normal)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", _PEAK, str(normal), *map(str, paths.values())],
                         capture_output=True, text=True, env=env, timeout=300, check=True)
    peaks = json.loads(run.stdout.strip().splitlines()[-1])
    for path in paths.values():
        assert peaks[str(path)] != "decoded"
        assert peaks[str(path)] - peaks["normal"] < 256, peaks
