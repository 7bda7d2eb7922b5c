"""report.html: self-contained, escaped, readable from 2 to 1,000 classes, renders in Chromium."""

import base64
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from pipelines.report import Report, cross_validate_report, open_set_report
from pipelines.report.html import MAX_TABLE_ROWS, html_table
from tests.pipelines.report.test_cross_validation import CountingEmbedder

EVIL = "<img src=x onerror=alert(1)>"
# Screenshots of the rendered pages are kept here for people to look at.
SCREENSHOTS = Path(os.environ.get("REPORT_SCREENSHOTS", "/tmp/report_html_screenshots"))


class _Page(HTMLParser):
    """Collects the tags, the image sources and the text of a page."""

    def __init__(self):
        super().__init__()
        self.tags, self.images, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Page:
    parsed = _Page()
    parsed.feed(page)
    return parsed


def _blobs(n_classes, n_per_class=4, seed=0):
    """Separable-ish 2-D clusters (a few mistakes), as flat 'images' for CountingEmbedder."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (n_classes, 8))
    X = np.vstack([rng.normal(c, 1.0, (n_per_class, 8)) for c in centres])
    return X.astype(np.float32), np.repeat(np.arange(n_classes), n_per_class)


def _report(n_classes, names=None) -> Report:
    X, y = _blobs(n_classes)
    if names is not None:
        y = np.asarray(names, dtype=object)[y]
    pipe = Pipeline([("embed", CountingEmbedder(dim=6)), ("head", KNeighborsClassifier(1))])
    return cross_validate_report(pipe, X, y, cv=2, heads=("knn", "logreg"))


@pytest.fixture(scope="module")
def saved5(tmp_path_factory):
    names = ["cat", "dog", EVIL, "a&b", 'say "hi"']
    out = tmp_path_factory.mktemp("rep5")
    return _report(5, names), out, _report(5, names).save(out)


def test_save_writes_a_self_contained_page(saved5):
    report, out, paths = saved5
    page = Path(paths["html"]).read_text(encoding="utf-8")
    assert paths["html"] == str(out / "report.html")
    parsed = _parse(page)
    # every figure is inside the page: three PNG data URIs, no other source
    assert len(parsed.images) == 3
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(?!data:)', page)
    text = " ".join(parsed.text)
    for heading in ("Heads side by side", "Per class", "Most confused pairs",
                    "Training", "Settings", "Embeddings in 2-D"):
        assert heading in text, heading


def test_class_names_and_user_text_are_escaped(saved5):
    report, _, paths = saved5
    page = Path(paths["html"]).read_text(encoding="utf-8")
    parsed = _parse(page)
    assert parsed.tags.count("img") == 3  # the class name did not become a fourth image
    assert EVIL not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert EVIL in "".join(parsed.text)  # ... it is shown as text
    assert "a&amp;b" in page and "say &quot;hi&quot;" in page


def test_repr_html_and_to_frame(saved5):
    report = saved5[0]
    assert "<table>" in report._repr_html_() and "<img" not in report._repr_html_()
    frame = report.to_frame()
    assert list(frame.columns) == ["head", "metric", "mean", "std", "fold_1", "fold_2"]
    assert len(frame) == 2 * 5
    row = frame[(frame["head"] == "logreg") & (frame["metric"] == "balanced_accuracy")]
    assert row["mean"].item() == report.heads["logreg"].mean["balanced_accuracy"]
    assert row["fold_2"].item() == report.heads["logreg"].folds["balanced_accuracy"][1]


def test_long_tables_are_cut_with_a_count():
    table = html_table(["class"], [[f"c{i}"] for i in range(MAX_TABLE_ROWS + 7)],
                       what="classes")
    assert table.count("<tr>") == MAX_TABLE_ROWS + 1  # + the header
    assert f"{MAX_TABLE_ROWS} of {MAX_TABLE_ROWS + 7} classes shown" in table
    assert "more" not in html_table(["a"], [[1], [2]])
    assert '<table class="text">' in html_table(["a"], [["x"]], text=True)


def test_many_classes_list_pairs_instead_of_a_matrix_table():
    report = _report(300, names=[f"class {i}" for i in range(300)])
    page = report.to_html()
    assert "true \\ pred" not in page and "Most confused pairs" in page
    assert f"{MAX_TABLE_ROWS} of 300 classes shown" in page


def test_open_set_report_page_embeds_the_histogram(tmp_path):
    rng = np.random.default_rng(0)
    corners = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    X = np.vstack([rng.normal(c, 0.1, (12, 2)) for c in corners])
    y = np.repeat(np.array(["nw", "ne", EVIL, "se"]), 12)
    pipe = Pipeline([("embed", FunctionTransformer()), ("head", KNeighborsClassifier(3))])
    report = open_set_report(pipe, X, y, unknown_classes=1, cv=2)
    paths = report.save(tmp_path)
    page = Path(paths["html"]).read_text(encoding="utf-8")
    assert _parse(page).images[0].startswith("data:image/png;base64,")
    assert len(_parse(page).images) == 1 and EVIL not in page
    assert "AUROC (known vs unknown, by score)" in page
    frame = report.to_frame()
    assert frame.set_index("metric").loc["auroc", "mean"] == report.mean["auroc"]
    assert "<img" not in report._repr_html_()


# --- the page in a real browser ------------------------------------------------------


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium; `make test` "
                "installs it when run as root): the page is not rendered")


def _run_chromium(browser, *args, timeout=90):
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--disable-dev-shm-usage", "--no-first-run", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


# Runs in the page after load: the number of images that failed to decode.
_CHECK_IMAGES = """<script>window.addEventListener('load', function () {
  var bad = Array.from(document.images).filter(function (i) {
    return !i.complete || i.naturalWidth === 0; }).length;
  document.title = 'images:' + document.images.length + ' broken:' + bad; });</script>"""


def _render(browser, page_path: Path, shot: Path) -> tuple[str, np.ndarray]:
    """The page's title after the image check, and its screenshot as an RGB array."""
    from PIL import Image

    probe = page_path.with_name("probe.html")
    probe.write_text(page_path.read_text(encoding="utf-8").replace(
        "</body>", _CHECK_IMAGES + "</body>"), encoding="utf-8")
    dom = _run_chromium(browser, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    title = re.search(r"<title>(.*?)</title>", dom.stdout or "")
    shot.parent.mkdir(parents=True, exist_ok=True)
    _run_chromium(browser, f"--screenshot={shot}", "--window-size=1200,6000",
                  page_path.as_uri())
    if not shot.is_file():
        pytest.fail(f"chromium wrote no screenshot: {dom.stderr[-500:]}")
    return (title.group(1) if title else ""), np.asarray(Image.open(shot).convert("RGB"))


@pytest.mark.parametrize("n_classes", [5, 200])
def test_report_renders_in_headless_chromium(tmp_path, n_classes):
    browser = _chromium()
    names = [f"class {i}" for i in range(n_classes - 1)] + [EVIL]
    paths = _report(n_classes, names).save(tmp_path)
    title, pixels = _render(browser, Path(paths["html"]),
                            SCREENSHOTS / f"report_{n_classes}_classes.png")
    assert title == "images:3 broken:0"  # the script ran: no alert() stopped it
    # not blank: many colours and dark (text, plot) pixels as well as the white page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200
    dark = (pixels.mean(axis=2) < 128).mean()
    assert 0.001 < dark < 0.6
