"""The documentation builds (`mkdocs build --strict`) and the README links to it.

The guides' python examples run in tests/test_readme.py, after the README's.
"""

import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_docs_build_strict_with_the_api_reference(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec(
            "mkdocstrings_handlers") is None:
        pytest.skip("mkdocs and mkdocstrings are not installed (pip install -e '.[docs]')")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                           "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          capture_output=True, text=True, timeout=180, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.perf_counter() - start < 120
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    # the reference is made from the docstrings: parameters of the estimator are there
    assert "TripletEmbedder" in api and "samples_per_class" in api
    assert "report_html" in api and "to_frame" in api
    for page in ("getting-started", "choosing", "deploying"):
        assert (tmp_path / "site" / page / "index.html").is_file(), page


def test_readme_links_to_existing_pages_and_pictures():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    targets = re.findall(r"\]\(((?!https?:)[^)#]+)\)", readme)
    assert {"docs/getting-started.md", "docs/choosing.md", "docs/deploying.md"} <= set(targets)
    for target in targets:
        assert (ROOT / target).exists(), target
