"""open_set_report: folds hide whole classes, never train on them, and score honestly."""

import io
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from classifiers import OpenSetClassifier
from embedder import TripletEmbedder
from embedder.data.fingerprints import image_fingerprints, overlap
from pipelines import make_triplet_pipeline, open_set_report
from pipelines.report import hidden_class_folds
from tests._helpers import TINY_SHAPE, tiny_embedder

CORNERS = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])


class RecordingEmbedder(TripletEmbedder):
    """A TripletEmbedder that keeps the training fingerprints of every fitted clone."""

    fitted: list = []

    def fit(self, X, y=None):
        super().fit(X, y)
        RecordingEmbedder.fitted.append(self.training_fingerprints_)
        return self


def _corners(n_per_class=12, seed=0):
    """Four tight 2-D clusters (std 0.1) at the corners of a 10 x 10 square."""
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(c, 0.1, (n_per_class, 2)) for c in CORNERS])
    return X, np.repeat(np.array(["nw", "ne", "sw", "se"]), n_per_class)


def _identity_pipeline(head=None):
    return Pipeline([("embed", FunctionTransformer()),
                     ("head", head if head is not None else KNeighborsClassifier(3))])


def test_folds_never_train_the_encoder_on_their_unknown_classes(shapes16):
    X, y = shapes16
    RecordingEmbedder.fitted = []
    params = tiny_embedder(epochs=1).get_params()
    pipeline = make_triplet_pipeline(RecordingEmbedder(**params), "knn")
    report = open_set_report(pipeline, X, y, unknown_classes=2, cv=2, random_state=0)
    assert len(RecordingEmbedder.fitted) == 2
    for fold, seen in zip(report.folds, RecordingEmbedder.fitted, strict=True):
        hidden = np.isin(y.astype(str), fold["unknown_classes"])
        assert hidden.sum() == fold["n_unknown_test"] == 48  # 2 classes x 24 images
        assert overlap(seen, image_fingerprints(X[hidden])) == 0
        assert overlap(seen, image_fingerprints(X[~hidden])) == len(seen) == fold["n_train"]
        assert fold["encoder_saw_unknown"] == 0
    assert report.folds[0]["unknown_classes"] != report.folds[1]["unknown_classes"]
    assert report.warnings == []
    assert 0.0 <= report.mean["auroc"] <= 1.0


def test_frozen_encoder_that_saw_hidden_classes_is_reported(shapes16, tmp_path):
    from embedder import FrozenEmbedder

    X, y = shapes16
    path = tiny_embedder(epochs=1).fit(X, y).save_encoder(tmp_path / "all.keras")
    pipeline = make_triplet_pipeline(FrozenEmbedder(path, input_shape=TINY_SHAPE), "knn")
    with pytest.warns(UserWarning, match=r"fold 1: the encoder was trained on 48 images of "
                                         r"the classes it hides"):
        report = open_set_report(pipeline, X, y, unknown_classes=2, cv=1)
    assert report.folds[0]["encoder_saw_unknown"] == 48


def test_far_unknown_class_gives_perfect_scores():
    X, y = _corners()
    report = open_set_report(_identity_pipeline(), X, y, unknown_classes=1, cv=4)
    assert sorted(f["unknown_classes"][0] for f in report.folds) == ["ne", "nw", "se", "sw"]
    for fold in report.folds:
        assert (fold["n_train"], fold["n_known_test"], fold["n_unknown_test"]) == (27, 9, 12)
        assert fold["auroc"] == 1.0 and fold["fpr_at_95_tpr"] == 0.0
        assert fold["unknown_rejected"] == 1.0 and fold["closed_set_accuracy"] == 1.0
    assert report.mean["auroc"] == 1.0 and report.std["auroc"] == 0.0
    assert report.notes == ["The embedder records no training fingerprints, so whether it "
                            "saw the hidden classes could not be checked."]


def test_open_set_accuracy_counts_rejections_of_unknown_as_right():
    X, y = _corners()
    report = open_set_report(_identity_pipeline(), X, y, unknown_classes=1, cv=1,
                             target_tpr=1.0, score="centroid")
    fold = report.folds[0]
    # threshold accepts every calibration image; known test images within it are right
    expected = (fold["known_accepted"] * 9 + fold["unknown_rejected"] * 12) / 21
    assert fold["open_set_accuracy"] == pytest.approx(expected)
    assert fold["unknown_rejected"] == 1.0


def test_an_open_set_head_is_unwrapped_and_rescored():
    X, y = _corners()
    head = OpenSetClassifier(KNeighborsClassifier(3), open_set_score="centroid")
    report = open_set_report(_identity_pipeline(head), X, y, unknown_classes=1, cv=1,
                             score="knn_distance")
    assert report.score == "knn_distance"
    assert report.head == "KNeighborsClassifier(n_neighbors=3)"


def test_save_writes_json_markdown_and_histogram(tmp_path):
    X, y = _corners()
    report = open_set_report(_identity_pipeline(), X, y, unknown_classes=1, cv=2)
    paths = report.save(tmp_path / "out")
    assert sorted(paths) == ["histogram", "html", "json", "markdown"]
    data = json.loads((tmp_path / "out" / "open_set_report.json").read_text())
    assert data["mean"]["auroc"] == 1.0 and len(data["scores"][0]["unknown"]) == 12
    markdown = (tmp_path / "out" / "open_set_report.md").read_text()
    assert "| AUROC (known vs unknown, by score) | 1.0000 | 1.0000 | 1.0000 +- 0.0000 |" \
        in markdown
    assert "![open-set scores](open_set_scores.png)" in markdown
    png = (tmp_path / "out" / "open_set_scores.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "open_set_report.html", "open_set_report.json", "open_set_report.md",
        "open_set_scores.png"]


def test_hidden_class_folds_are_disjoint_then_new():
    folds = hidden_class_folds(np.arange(5), 2, 3, np.random.default_rng(0))
    assert folds == [[2, 4], [0, 3], [1, 2]]
    folds = hidden_class_folds(["a", "b", "c", "d"], 2, 4, np.random.default_rng(0))
    assert folds == [["a", "c"], ["b", "d"], ["a", "d"], ["b", "c"]]


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"unknown_classes": 3}, ValueError, r"unknown_classes must be an int from 1 to 2 \(the "
                                         r"number of classes, 4, minus the 2 that must stay "
                                         r"known\), got 3"),
    ({"cv": 7}, ValueError, r"cv must be at most 6, the number of different sets of 2 of "
                            r"the 4 classes, got 7"),
    ({"score": "energy"}, ValueError, r"score must be one of \['knn_distance', 'centroid', "
                                      r"'max_proba'\], got 'energy'"),
    ({"target_tpr": 0}, ValueError, r"target_tpr must be a float in \(0, 1\], got 0"),
])
def test_bad_arguments_are_named(kwargs, error, message):
    X, y = _corners()
    with pytest.raises(error, match=message):
        open_set_report(_identity_pipeline(), X, y, **{"unknown_classes": 2, **kwargs})


def test_pipeline_and_label_count_are_checked():
    X, y = _corners()
    with pytest.raises(TypeError, match=r"pipeline must be an sklearn Pipeline with an "
                                        r"embedding step and a head step.*got "
                                        r"KNeighborsClassifier"):
        open_set_report(KNeighborsClassifier(), X, y)
    with pytest.raises(ValueError, match=r"y must have one label per image \(48\), got 47"):
        open_set_report(_identity_pipeline(), X, y[:-1])


# --- the command line: predict --reject-unknown, evaluate --open-set -------------------

def _run(argv):
    import contextlib
    import io

    from pipelines.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    from pipelines import save_pipeline
    from tests._images import make_shapes, write_image_folder

    root = tmp_path_factory.mktemp("open_set_cli")
    X, y = make_shapes(6, size=16)
    paths = write_image_folder(root / "images", X, y,
                               class_names=["sq", "disc", "cross", "bar", "tri"])
    labels = np.array([p.split("/")[-2] for p in paths])
    plain = make_triplet_pipeline(tiny_embedder(epochs=1), "knn")
    plain.fit(np.asarray(paths, dtype=object), labels)
    save_pipeline(plain, root / "plain.joblib")
    open_head = OpenSetClassifier(KNeighborsClassifier(3), target_tpr=0.9, random_state=0)
    Z = plain[:-1].transform(np.asarray(paths, dtype=object))
    save_pipeline(Pipeline([("embed", plain[0]), ("head", open_head.fit(Z, labels))]),
                  root / "open.joblib")
    return root


def _threshold_line(err):
    import re

    match = re.search(r"open-set threshold ([0-9.]+) \((\w+), accepts ([0-9.]+) of known "
                      r"images\); (\d+) of (\d+) images rejected as 'unknown'", err)
    assert match, err
    return float(match[1]), match[2], float(match[3]), int(match[4]), int(match[5])


def test_cli_predict_rejects_with_a_saved_open_set_head(saved_models):
    root = saved_models
    code, out, err = _run(["predict", root / "open.joblib", root / "images",
                           "--reject-unknown", "--out", root / "pred.csv"])
    assert code == 0, err
    table = pd.read_csv(root / "pred.csv")
    assert table.columns.tolist() == ["path", "class", "probability", "open_set_score"]
    threshold, score, tpr, rejected, total = _threshold_line(err)
    assert (score, tpr, total) == ("knn_distance", 0.9, 30)
    assert ((table["class"] == "unknown") == (table["open_set_score"] > threshold + 1e-6)).all()
    assert rejected == int((table["class"] == "unknown").sum())


def test_cli_predict_target_tpr_moves_the_threshold(saved_models):
    root = saved_models
    results = {}
    for tpr in ("1.0", "0.05"):
        code, out, err = _run(["predict", root / "open.joblib", root / "images",
                               "--reject-unknown", "--target-tpr", tpr])
        assert code == 0, err
        results[tpr] = _threshold_line(err)
    assert results["0.05"][0] < results["1.0"][0]
    assert results["0.05"][3] > results["1.0"][3]  # more rejected at a lower rate


def test_cli_predict_calibrates_a_plain_head(saved_models):
    root = saved_models
    code, out, err = _run(["predict", root / "plain.joblib", root / "images",
                           "--reject-unknown", "--calibration", root / "images"])
    assert code == 0, err
    assert _threshold_line(err)[1:3] == ("knn_distance", 0.95)
    assert "calibration DATA" in err and "30 images, 5 classes" in err
    table = pd.read_csv(io.StringIO(out))  # stdout holds the CSV only
    assert table.columns.tolist() == ["path", "class", "probability", "open_set_score"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--reject-unknown"], r"--reject-unknown needs --calibration DATA \(labelled images of "
                           r"the known classes\) unless the model's head is an "
                           r"OpenSetClassifier; the head of .* is a KNeighborsClassifier"),
    (["--target-tpr", "0.9"], r"--target-tpr and --calibration only apply with "
                              r"--reject-unknown"),
    (["--reject-unknown", "--calibration", "IMAGES", "--target-tpr", "1.5"],
     r"--target-tpr must be in \(0, 1\], got 1.5"),
])
def test_cli_predict_open_set_errors(saved_models, extra, message):
    import re

    root = saved_models
    extra = [str(root / "images") if a == "IMAGES" else a for a in extra]
    code, _, err = _run(["predict", root / "plain.joblib", root / "images", *extra])
    assert code == 1
    assert re.search(message, err.strip().splitlines()[-1]), err


def test_cli_evaluate_open_set_saves_the_report(saved_models):
    root = saved_models
    code, out, err = _run(["evaluate", root / "images", "--out", root / "report",
                           "--open-set", "2", "--cv", "2", "--heads", "knn",
                           "--encoder", "tiny_cnn", "--epochs", "1", "--image-size", "16",
                           "--embedding-dim", "8"])
    assert code == 0, err
    data = json.loads((root / "report" / "open_set_report.json").read_text())
    assert data["cv"]["n_splits"] == 2 and data["cv"]["unknown_classes"] == 2
    assert all(f["encoder_saw_unknown"] == 0 for f in data["folds"])
    assert "AUROC" in out and (root / "report" / "open_set_scores.png").is_file()
    code, _, err = _run(["evaluate", root / "images", "--out", root / "r2",
                         "--open-set", "4", "--encoder", "tiny_cnn"])
    assert code == 1
    assert "--open-set must be from 1 to 3 (the 5 classes minus 2 that stay known), got 4" \
        in err
