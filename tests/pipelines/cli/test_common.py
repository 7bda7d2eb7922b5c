"""Progress display, table writing and the option checks of the ``triplet`` commands."""

import argparse
import io
import json

import numpy as np
import pandas as pd
import pytest

from pipelines.cli.common import Progress, ProgressTransformer, check_options, write_table


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_in_a_pipe_writes_a_line_per_n_images():
    out = io.StringIO()
    progress = Progress(25, every=10, stream=out)
    for _ in range(5):
        progress.update(5)
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["10/25 images embedded", "20/25 images embedded"]
    assert lines[2].startswith("25/25 images embedded in ") and len(lines) == 3


def test_progress_on_a_terminal_redraws_one_bar():
    out = _Terminal()
    progress = Progress(4, stream=out)
    list(progress.blocks([np.zeros((3, 2)), np.zeros((1, 2))]))
    text = out.getvalue()
    assert text.count("\r") == 2 and text.count("\n") == 2  # one bar, then the last line
    assert "[######################........] 3/4 images embedded" in text
    assert "\n4/4 images embedded in " in text


class _Doubling:
    def __init__(self):
        self.calls = 0

    def transform(self, X):
        self.calls += 1
        return np.asarray(X, dtype=float)[:, None] * 2


def test_progress_transformer_chunks_without_changing_values(capsys):
    inner = _Doubling()
    Z = ProgressTransformer(inner, chunk=4, every=4).transform(np.arange(10))
    np.testing.assert_array_equal(Z[:, 0], np.arange(10) * 2)
    assert inner.calls == 3
    assert capsys.readouterr().err.splitlines()[:2] == ["4/10 images embedded",
                                                        "8/10 images embedded"]


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_write_table_follows_the_suffix(tmp_path, suffix):
    frame = pd.DataFrame({"path": ["a.png", "b.png"], "class": ["x", "y"],
                          "probability": [0.5, 1.0]})
    path = tmp_path / f"p{suffix}"
    write_table(frame, path)
    if suffix == ".json":
        assert json.loads(path.read_text())[1] == {"path": "b.png", "class": "y",
                                                   "probability": 1.0}
    else:
        read = pd.read_csv if suffix == ".csv" else pd.read_parquet
        pd.testing.assert_frame_equal(read(path), frame)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def _args(command, **values):
    base = {"predict": {"out": None, "reject_unknown": False, "target_tpr": None,
                        "calibration": None}}.get(command, {})
    return argparse.Namespace(command=command, **{**base, **values})


@pytest.mark.parametrize(("command", "values", "message"), [
    ("evaluate", {"heads": "knn,forest"},
     "--heads must be comma-separated names from ['knn', 'logreg', 'svm'], got 'forest'"),
    ("evaluate", {"heads": " , "}, "--heads must name at least one head, e.g. knn,logreg,svm"),
    ("evaluate", {"cv": 1}, "--cv must be at least 2, got 1"),
    ("evaluate", {"open_set": 0}, "--open-set must be at least 1, got 0"),
    ("embed", {"batch_size": 0, "out": "e.npy"}, "--batch-size must be at least 1, got 0"),
    ("embed", {"out": "e.txt"}, "--out must end with one of .npy, .csv, .parquet, got 'e.txt'"),
    ("search", {"top": 0}, "--top must be at least 1, got 0"),
    ("search", {"image_size": 4}, "--image-size must be at least 8, got 4"),
    ("predict", {"out": "p.xlsx"}, "--out must end with one of .csv, .json, .parquet, got "
     "'p.xlsx'"),
    ("predict", {"target_tpr": 1.5, "reject_unknown": True},
     "--target-tpr must be in (0, 1], got 1.5"),
    ("predict", {"calibration": "data/"},
     "--target-tpr and --calibration only apply with --reject-unknown"),
])
def test_check_options_names_the_option(command, values, message):
    with pytest.raises(ValueError) as info:
        check_options(_args(command, **values))
    assert str(info.value) == message


def test_check_options_accepts_good_values():
    check_options(_args("evaluate", heads="knn, svm", cv=2, n_jobs=-1, open_set=1))
    check_options(_args("predict", out="p.json", reject_unknown=True, target_tpr=1.0))
