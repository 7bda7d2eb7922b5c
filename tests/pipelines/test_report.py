import json
import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

from embedder.fingerprints import image_fingerprints
from pipelines.report import Report, cross_validate_report
from tests._images import make_shapes


class CountingEmbedder(TransformerMixin, BaseEstimator):
    """Stand-in for TripletEmbedder: a random projection centred on the training mean."""

    fits = 0

    def __init__(self, encoder="fake", dim=6, random_state=0):
        self.encoder = encoder
        self.dim = dim
        self.random_state = random_state

    def fit(self, X, y):
        type(self).fits += 1
        flat = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
        self.mean_ = flat.mean(axis=0)
        self.proj_ = np.random.default_rng(self.random_state).normal(size=(flat.shape[1], self.dim))
        self.classes_ = np.unique(y)
        self.history_ = {"loss": [0.3, 0.2], "val_map_at_r": [0.5, None]}
        self.frozen_ = False
        self.training_fingerprints_ = image_fingerprints(X)
        return self

    def transform(self, X):
        flat = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
        Z = (flat - self.mean_) @ self.proj_
        return (Z / np.linalg.norm(Z, axis=1, keepdims=True)).astype(np.float32)


def _pipeline(embedder=None, head=None):
    return Pipeline([("embed", embedder or CountingEmbedder()),
                     ("head", head or KNeighborsClassifier(3))])


HEADS = (KNeighborsClassifier(3), LogisticRegression(C=10.0, max_iter=300))


@pytest.fixture(scope="module")
def data():
    return make_shapes(10, size=8)  # 50 images, 5 classes


def test_numbers_match_cross_val_score(data):
    X, y = data
    CountingEmbedder.fits = 0
    report = cross_validate_report(_pipeline(), X, y, cv=3, heads=HEADS, random_state=0)
    assert CountingEmbedder.fits == 3  # one encoder per fold, shared by both heads
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    for name, head in zip(["KNeighborsClassifier", "LogisticRegression"], HEADS, strict=True):
        row = report.heads[name]
        for metric in ("accuracy", "balanced_accuracy", "f1_macro"):
            expected = cross_val_score(_pipeline(head=head), X, y, cv=folds, scoring=metric)
            np.testing.assert_allclose(row["folds"][metric], expected, rtol=1e-12)
            assert row["mean"][metric] == pytest.approx(expected.mean())
            assert row["std"][metric] == pytest.approx(expected.std())
        pred = cross_val_predict(_pipeline(head=head), X, y, cv=folds)
        np.testing.assert_array_equal(row["confusion_matrix"], confusion_matrix(y, pred))
        assert row["classification_report"]["macro avg"]["support"] == 50
        assert len(row["folds"]["fit_time"]) == len(row["folds"]["predict_time"]) == 3
    accs = {n: report.heads[n]["mean"]["balanced_accuracy"] for n in report.heads}
    assert report.best_head == max(accs, key=accs.get)
    assert report.classes == ["0", "1", "2", "3", "4"] and report.n_samples == 50
    assert report.cv["n_splits"] == 3 and report.refit_encoder == "per_fold"
    assert len(report.histories) == 3 and report.histories[0]["val_map_at_r"] == [0.5, None]
    assert set(report.retrieval["mean"]) >= {"precision_at_1", "map_at_r", "knn_accuracy"}
    assert len(report.retrieval["folds"]) == 3
    assert np.asarray(report.embedding_2d["points"]).shape == (17, 2)  # held-out of fold 1
    assert report.embedder == {"class": "CountingEmbedder", "dim": 6, "encoder": "fake",
                               "random_state": 0, "frozen": False}
    assert report.warnings == []


def test_named_heads_and_splitter(data):
    pytest.importorskip("classifiers.heads")
    from classifiers import make_head

    X, y = data
    folds = StratifiedKFold(2, shuffle=True, random_state=3)
    report = cross_validate_report(_pipeline(), X, y, cv=folds, heads=("knn", "svm"))
    assert list(report.heads) == ["knn", "svm"]
    expected = cross_val_score(_pipeline(head=make_head("svm")), X, y, cv=folds)
    np.testing.assert_allclose(report.heads["svm"]["folds"]["accuracy"], expected)


def _fitted(X, y):
    return CountingEmbedder().fit(X, y)


def test_leakage_warning_counts_overlap(data):
    X, y = data
    with pytest.warns(UserWarning, match="20 of the 50 evaluated images were in the encoder"):
        report = cross_validate_report(_pipeline(_fitted(X[:20], y[:20])), X, y, cv=2,
                                       heads=HEADS, refit_encoder="never")
    assert report.warnings[0].startswith("20 of the 50 evaluated images")
    assert "NOT refitted" in report.notes[0]
    with pytest.warns(UserWarning, match="50 of the 50 evaluated"):
        cross_validate_report(_pipeline(_fitted(X, y)), X, y, cv=2, heads=HEADS,
                              refit_encoder="never")


def test_no_leakage_warning_on_unseen_images_or_per_fold(data):
    X, y = data
    other_X, other_y = make_shapes(10, size=8, random_state=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        report = cross_validate_report(_pipeline(_fitted(other_X, other_y)), X, y, cv=2,
                                       heads=HEADS, refit_encoder="never")
        assert report.warnings == []
        assert "None of the 50 evaluated images" in report.notes[1]
        report = cross_validate_report(_pipeline(), X, y, cv=2, heads=HEADS)
        assert report.warnings == []
        assert "never seen" in report.notes[0]


def test_never_embeds_once_and_matches_heads_on_embeddings(data):
    X, y = data
    embedder = _fitted(X[:25], y[:25])
    CountingEmbedder.fits = 0
    with pytest.warns(UserWarning):
        report = cross_validate_report(_pipeline(embedder), X, y, cv=3, heads=HEADS,
                                       refit_encoder="never")
    assert CountingEmbedder.fits == 0  # the fitted embedder is used as is
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    expected = cross_val_score(HEADS[1], embedder.transform(X), y, cv=folds)
    np.testing.assert_allclose(report.heads["LogisticRegression"]["folds"]["accuracy"],
                               expected)
    assert len(report.timings["embed_time"]) == 1
    assert report.timings["encoder_fit_time"] == []


def test_unknown_fingerprints_is_a_note(data):
    X, y = data
    embedder = _fitted(X, y)
    embedder.training_fingerprints_ = np.asarray([], dtype=str)
    report = cross_validate_report(_pipeline(embedder), X, y, cv=2, heads=HEADS[:1],
                                   refit_encoder="never")
    assert report.warnings == []
    assert "training images are unknown" in report.notes[1]


def test_input_errors(data):
    X, y = data
    with pytest.raises(ValueError, match=r"refit_encoder must be one of \['per_fold', "
                                         r"'never'\], got 'always'"):
        cross_validate_report(_pipeline(), X, y, heads=HEADS, refit_encoder="always")
    with pytest.raises(ValueError, match="refit_encoder='never' needs a frozen embedder.*"
                                         "encoder='fake'"):
        cross_validate_report(_pipeline(), X, y, heads=HEADS, refit_encoder="never")
    with pytest.raises(TypeError, match="pipeline must be an sklearn Pipeline.*got "
                                        "KNeighborsClassifier"):
        cross_validate_report(KNeighborsClassifier(), X, y, heads=HEADS)
    with pytest.raises(ValueError, match="heads must be a non-empty sequence"):
        cross_validate_report(_pipeline(), X, y, heads=())
    with pytest.raises(TypeError, match="heads must contain head names or sklearn "
                                        "classifiers, got int"):
        cross_validate_report(_pipeline(), X, y, heads=[3])
    with pytest.raises(ValueError, match=r"y must be 1-D with one label per image \(50\), "
                                         r"got shape \(49,\)"):
        cross_validate_report(_pipeline(), X, y[:49], heads=HEADS)


def test_unknown_head_name(data):
    pytest.importorskip("classifiers.heads")
    X, y = data
    with pytest.raises(ValueError, match="heads must be names in .*got 'forest'"):
        cross_validate_report(_pipeline(), X, y, heads=("knn", "forest"))


def test_save_writes_all_files(data, tmp_path):
    X, y = data
    report = cross_validate_report(_pipeline(), X, y, cv=2, heads=HEADS)
    paths = report.save(tmp_path / "rep")
    assert set(paths) == {"json", "markdown", "confusion_matrix", "embeddings_2d",
                          "training_curves"}
    parsed = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert parsed["best_head"] == report.best_head
    assert parsed["histories"][0]["val_map_at_r"] == [0.5, None]
    assert Report.from_dict(parsed) == report
    markdown = (tmp_path / "rep" / "report.md").read_text()
    assert "| metric | KNeighborsClassifier | LogisticRegression |" in markdown
    assert "| balanced accuracy |" in markdown and "![confusion matrix]" in markdown
    for name in ("confusion_matrix.png", "embeddings_2d.png", "training_curves.png"):
        data_bytes = (tmp_path / "rep" / name).read_bytes()
        assert data_bytes[:8] == b"\x89PNG\r\n\x1a\n" and len(data_bytes) > 1000
    assert not list((tmp_path / "rep").glob("*.tmp"))
    assert "best head:" in report.summary()
    with pytest.raises(ValueError, match=r"report data lacks the fields \['warnings'\]"):
        Report.from_dict({k: v for k, v in parsed.items() if k != "warnings"})


def test_markdown_and_json_without_history(data):
    X, y = data
    embedder = _fitted(X, y)
    embedder.history_ = {}
    with pytest.warns(UserWarning):
        report = cross_validate_report(_pipeline(embedder), X, y, cv=2, heads=HEADS[:1],
                                       refit_encoder="never")
    text = report.to_markdown()
    assert "> **Warning:** 50 of the 50 evaluated images" in text
    assert "No encoder was trained during this evaluation." in text
    assert json.loads(report.to_json())["refit_encoder"] == "never"


def test_real_embedder_per_fold_matches_an_independent_fit():
    from embedder import TripletEmbedder

    pytest.importorskip("classifiers.heads")
    from pipelines.factory import make_triplet_pipeline

    X, y = make_shapes(12, size=16)
    pipeline = make_triplet_pipeline(
        TripletEmbedder(encoder="small_cnn", input_shape=(16, 16, 3), embedding_dim=16,
                        epochs=2, samples_per_class=4, random_state=0), "logreg")
    report = cross_validate_report(pipeline, X, y, cv=2, heads=("knn", "logreg"))
    assert report.embedder["encoder"] == "small_cnn" and report.embedder["frozen"] is False
    assert [len(h["loss"]) for h in report.histories] == [2, 2]
    # training is reproducible with random_state: the first fold refitted by sklearn alone
    first_fold = next(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))
    expected = cross_val_score(pipeline, X, y, cv=[first_fold], scoring="balanced_accuracy")
    assert report.heads["logreg"]["folds"]["balanced_accuracy"][0] == pytest.approx(expected[0])
    assert 0.0 <= report.retrieval["mean"]["map_at_r"] <= 1.0
