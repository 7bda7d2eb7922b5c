"""The README's Python examples run as written, on a small image folder of our own."""

import re
from pathlib import Path

import pytest

from tests._images import make_shapes, write_image_folder

README = Path(__file__).parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"),
                      flags=re.S | re.M)


def test_readme_has_python_examples():
    assert len(_python_blocks()) >= 3


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_readme_python_examples_run_as_written(tmp_path, monkeypatch):
    # the examples read "my_images/": 5 classes of small coloured shapes, one 2x larger
    X, y = make_shapes([16, 8, 8, 8, 8], size=24, random_state=0)
    write_image_folder(tmp_path / "my_images", X, y, class_names=[
        "squares", "discs", "crosses", "bars", "triangles"])
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    for number, block in enumerate(_python_blocks(), start=1):
        try:
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)
        except Exception as exc:  # name the block that failed
            raise AssertionError(f"README python block {number} failed: {exc!r}") from exc
    assert (tmp_path / "model.joblib").is_file()
