"""The README's Python examples run as written, on a small image folder of our own, and
then the guides' examples that the README does not repeat, in the same namespace."""

import re
from pathlib import Path

import pytest

from tests._images import make_shapes, write_image_folder

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
# Guide pages whose examples run after the README's, in this order (they use the pipeline,
# X and y of the README's first block); deploying.md needs the [export] extra: not run.
GUIDES = ("docs/python.md", "docs/scaling.md", "docs/open-set.md")


def _python_blocks(path=README):
    return re.findall(r"^```python\n(.*?)^```", Path(path).read_text(encoding="utf-8"),
                      flags=re.S | re.M)


def _examples():
    """(where, code) of the README's blocks, then of the guides' blocks not in the README."""
    readme = _python_blocks()
    out = [(f"README.md python block {i}", b) for i, b in enumerate(readme, start=1)]
    for page in GUIDES:
        out += [(f"{page} python block {i}", b)
                for i, b in enumerate(_python_blocks(ROOT / page), start=1) if b not in readme]
    return out


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
    for where, block in _examples():
        try:
            exec(compile(block, where, "exec"), namespace)
        except Exception as exc:  # name the block that failed
            raise AssertionError(f"{where} failed: {exc!r}") from exc
    assert (tmp_path / "model.joblib").is_file()
    assert (tmp_path / "report" / "report.html").is_file()
    assert (tmp_path / "open-set-report" / "open_set_report.html").is_file()
