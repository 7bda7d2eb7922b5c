"""Class and file names are untrusted text: CSVs neutralise formulas, Markdown escapes HTML."""

import contextlib
import csv
import io

import numpy as np
import pytest

from pipelines.cli.main import main
from pipelines.report.markdown import report_markdown
from pipelines.streaming import write_embeddings
from pipelines.text import csv_cell, csv_column, markdown_table, markdown_text
from tests._helpers import TINY_SHAPE, tiny_embedder
from tests._images import make_shapes, write_image_folder
from tests.pipelines.report.test_cross_validation import _hand_report

HOSTILE = ["=1+1", "+SUM(1;1)", "-2+3", "@cmd"]
XSS = "<img src=x onerror=alert(1)>"


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    assert code == 0, err.getvalue()
    return out.getvalue()


def _cells(path, column):
    with open(path, newline="", encoding="utf-8") as f:
        return [row[column] for row in csv.DictReader(f)]


def test_csv_cells_starting_a_formula_get_a_quote():
    for text in [*HOSTILE, "\tx", "\rx"]:
        assert csv_cell(text) == "'" + text
    assert csv_cell("cat") == "cat" and csv_cell(-2.5) == -2.5 and csv_cell("a=b") == "a=b"
    assert csv_column(np.array([-1.0, 2.0])).tolist() == [-1.0, 2.0]
    assert csv_column(np.array(["=x", "y"])).tolist() == ["'=x", "y"]


def test_markdown_escapes_html_and_table_syntax():
    assert markdown_text(XSS + "|\nx") == "&lt;img src=x onerror=alert(1)&gt;\\| x"
    assert "<img" not in markdown_table(["class"], [[XSS]])
    text = report_markdown(_hand_report(classes=(XSS, "ok")), {})
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text


def test_write_embeddings_csv_neutralises_labels(tmp_path):
    labels = np.array(HOSTILE, dtype=object)
    paths = np.array([f"/d/{c}/a.png" for c in HOSTILE], dtype=object)
    block = np.arange(8, dtype=np.float32).reshape(4, 2) - 4
    write_embeddings([block], 4, 2, tmp_path / "e.csv", columns={"path": paths, "label": labels})
    assert _cells(tmp_path / "e.csv", "label") == ["'" + c for c in HOSTILE]
    assert _cells(tmp_path / "e.csv", "e0") == ["-4.0", "-2.0", "0.0", "2.0"]  # numbers stay


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory):
    from pipelines import make_triplet_pipeline, save_pipeline

    root = tmp_path_factory.mktemp("hostile")
    X, y = make_shapes(4, size=16, n_classes=4)
    paths = write_image_folder(root / "data", X, y, class_names=HOSTILE)
    labels = np.array([p.split("/")[-2] for p in paths])
    pipeline = make_triplet_pipeline(tiny_embedder(epochs=1), "knn")
    pipeline.fit(np.asarray(paths, dtype=object), labels)
    save_pipeline(pipeline, root / "model.joblib")
    pipeline[0].save_encoder(root / "enc.keras")
    return root, paths


def test_cli_csvs_neutralise_class_names(hostile_folder):
    root, paths = hostile_folder
    quoted = {"'" + c for c in HOSTILE}
    _run(["embed", root / "enc.keras", root / "data", "--out", root / "e.csv",
          "--image-size", TINY_SHAPE[0]])
    assert set(_cells(root / "e.csv", "label")) == quoted
    _run(["predict", root / "model.joblib", root / "data", "--out", root / "p.csv"])
    assert set(_cells(root / "p.csv", "class")) <= quoted
    _run(["search", root / "model.joblib", root / "data", paths[0], "--top", "3",
          "--out", root / "h.csv"])
    with open(root / "h.csv", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    cells = [cell for row in rows[1:] for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "@")], rows
    assert any(c in quoted for c in cells), rows
