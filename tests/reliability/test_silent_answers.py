"""Silent wrong answers turned into refusals: NaN unknown label, one-class calibration,
class folders linked into the data folder, ``evaluate --out`` a file."""

import contextlib
import io
import os
import time

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from classifiers import OpenSetClassifier
from embedder.data import load_dataset
from pipelines.cli.main import main
from pipelines.report import rejecting_head
from tests._images import make_shapes, write_image_folder


def _blobs(n_classes=3, n=20, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n)
    return rng.normal(size=(len(y), 4)) + 5 * y[:, None], y


def test_nan_unknown_label_is_refused():
    X, y = _blobs()
    with pytest.raises(ValueError, match=r"^unknown_label must equal itself so predictions can "
                       r"be compared with it, got nan; use e\.g\. -1 or 'unknown'$"):
        OpenSetClassifier(LogisticRegression(), unknown_label=float("nan")).fit(X, y)
    fitted = OpenSetClassifier(LogisticRegression(), unknown_label=-1).fit(X, y)
    assert set(np.unique(fitted.predict(X))) <= {-1, 0, 1, 2}


def test_calibration_on_one_known_class_is_refused():
    X, y = _blobs()
    head = LogisticRegression().fit(X, y)
    with pytest.raises(ValueError, match=r"^calibration must hold images of at least 2 known "
                       r"classes, got 1 \(0\): images of every other class would be rejected$"):
        rejecting_head(head, (X[y == 0], y[y == 0]))
    with pytest.raises(ValueError, match=r"^calibration lacks 1 of the head's 3 classes \(2\): "
                       r"their images would be rejected as unknown$"):
        rejecting_head(head, (X[y < 2], y[y < 2]))
    accepted = rejecting_head(head, (X, y)).predict(X)
    assert (accepted == y).mean() > 0.8


def test_class_folder_linked_into_the_data_folder_is_ignored(tmp_path):
    X, y = make_shapes(3, size=8, n_classes=2)
    write_image_folder(tmp_path / "data", X, y, class_names=["a", "b"])
    os.symlink(tmp_path / "data", tmp_path / "data" / "all")
    os.symlink(tmp_path / "data" / "a", tmp_path / "data" / "a_again")
    outside = tmp_path / "elsewhere"
    write_image_folder(outside, X[:3], y[:3], class_names=["c"])
    os.symlink(outside / "c", tmp_path / "data" / "c")  # outside: an ordinary class
    with pytest.warns(UserWarning) as record:
        paths, labels = load_dataset(tmp_path / "data")
    messages = sorted(str(w.message) for w in record)
    assert messages == [
        f"class folder {str(tmp_path / 'data' / name)!r} is a symlink to "
        f"{str((tmp_path / 'data' / target).resolve())!r} inside the data folder: ignored "
        "(its images would be counted twice, under two labels)"
        for name, target in [("a_again", "a"), ("all", ".")]]
    assert sorted(np.unique(labels).tolist()) == ["a", "b", "c"]
    assert len(paths) == len(set(os.path.realpath(p) for p in paths)) == 9


def test_evaluate_out_is_checked_before_the_work(tmp_path):
    X, y = make_shapes(4, size=16, n_classes=2)
    write_image_folder(tmp_path / "data", X, y)
    (tmp_path / "report").write_text("a file")
    err = io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(err):
        code = main(["evaluate", str(tmp_path / "data"), "--out", str(tmp_path / "report"),
                     "--epochs", "1", "--image-size", "16"])
    assert code == 1 and time.monotonic() - start < 20
    assert err.getvalue().strip() == (
        f"triplet: error: --out must be a folder (the report and model go there), but "
        f"{str(tmp_path / 'report')!r} is a file")
    assert out.getvalue() == ""  # not even the data was loaded
