import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

from embedder.data.fingerprints import image_fingerprints
from pipelines.report import (
    CVInfo,
    EmbedderInfo,
    FoldRecord,
    HeadResult,
    Report,
    RetrievalResult,
    cross_validate_report,
    report_progress,
)
from pipelines.report.cross_validation import _validation_note
from pipelines.report.folds import choose_knn_k
from pipelines.report.markdown import confused_pairs, report_markdown, report_summary
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
        assert isinstance(row, HeadResult) and row.estimator == repr(head)
        for metric in ("accuracy", "balanced_accuracy", "f1_macro"):
            expected = cross_val_score(_pipeline(head=head), X, y, cv=folds, scoring=metric)
            np.testing.assert_allclose(row.folds[metric], expected, rtol=1e-12)
            assert row.mean[metric] == pytest.approx(expected.mean())
            assert row.std[metric] == pytest.approx(expected.std())
        pred = cross_val_predict(_pipeline(head=head), X, y, cv=folds)
        np.testing.assert_array_equal(row.confusion_matrix, confusion_matrix(y, pred))
        assert row.classification_report["macro avg"]["support"] == 50
        assert len(row.folds["fit_time"]) == len(row.folds["predict_time"]) == 3
    accs = {n: report.heads[n].mean["balanced_accuracy"] for n in report.heads}
    assert report.best_head == max(accs, key=accs.get)
    assert report.classes == ["0", "1", "2", "3", "4"] and report.n_samples == 50
    assert report.cv == CVInfo(3, repr(folds), 0, None) and report.refit_encoder == "per_fold"
    assert [(f.index, f.n_train, f.n_test) for f in report.folds] == [(0, 33, 17), (1, 33, 17),
                                                                     (2, 34, 16)]
    assert all(f.encoder_fit_time > 0 and f.validation is None for f in report.folds)
    assert report.histories[0] == {"loss": [0.3, 0.2], "val_map_at_r": [0.5, None]}
    assert set(report.retrieval.mean) == {"precision_at_1", "r_precision", "map_at_r",
                                          "knn_accuracy"}
    assert len(report.retrieval.folds) == 3 and report.retrieval.k == 2  # smallest: 3 images
    assert np.asarray(report.embedding_2d["points"]).shape == (17, 2)  # held-out of fold 1
    assert report.embedder == EmbedderInfo(
        "CountingEmbedder", {"encoder": "fake", "dim": 6, "random_state": 0}, False, {}, None,
        None)
    assert report.warnings == [] and report.validation is None


def test_named_heads_and_splitter(data):
    from classifiers import make_head

    X, y = data
    folds = StratifiedKFold(2, shuffle=True, random_state=3)
    report = cross_validate_report(_pipeline(), X, y, cv=folds, heads=("knn", "svm"))
    assert list(report.heads) == ["knn", "svm"]
    expected = cross_val_score(_pipeline(head=make_head("svm")), X, y, cv=folds)
    np.testing.assert_allclose(report.heads["svm"].folds["accuracy"], expected)


def _fitted(X, y):
    return CountingEmbedder().fit(X, y)


def test_leakage_warning_counts_overlap(data):
    X, y = data
    with pytest.warns(UserWarning, match="20 of the 50 evaluated images were in the encoder"):
        report = cross_validate_report(_pipeline(_fitted(X[:20], y[:20])), X, y, cv=2,
                                       heads=HEADS, refit_encoder="never")
    assert report.warnings[0].startswith("20 of the 50 evaluated images")
    assert "NOT refitted" in report.notes[0] and report.embedder.frozen is True
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
        assert report.notes[1] == ("None of the 50 evaluated images is among the 50 images "
                                   "the encoder was trained on.")
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
    np.testing.assert_allclose(report.heads["LogisticRegression"].folds["accuracy"],
                               expected)
    assert report.embedder.embed_time > 0
    assert [f.encoder_fit_time for f in report.folds] == [None, None, None]
    assert report.histories == [{"loss": [0.3, 0.2], "val_map_at_r": [0.5, None]}]
    assert np.asarray(report.embedding_2d["points"]).shape == (50, 2)  # all images


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
    with pytest.raises(ValueError, match=r"refit_encoder='never' needs a frozen embedder \(an "
                                         r"embedder.FrozenEmbedder or an already fitted "
                                         r"embedder\), got an unfitted CountingEmbedder"):
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
    with pytest.raises(ValueError, match="cv must be at least 2 folds, got 1"):
        cross_validate_report(_pipeline(), X, y, cv=1, heads=HEADS)


def test_too_many_folds_names_cv_the_class_and_its_size():
    X, y = make_shapes([6, 6, 2, 3, 6], size=8)
    with pytest.raises(ValueError, match=r"^cv=5 folds need at least 5 images in every class "
                                         r".*but class '2' has 2; 2 of 5 classes have fewer "
                                         r"than 5: '2', '3'\. Use a smaller cv"):
        cross_validate_report(_pipeline(), X, y, cv=5, heads=HEADS)
    # a splitter object is checked too, and long listings stay short
    labels = np.asarray([f"s{i}" for i in range(12)]).repeat(2)
    with pytest.raises(ValueError, match=r"class 's0' has 2; 12 of 12 classes have fewer "
                                         r"than 3: 's0', 's1', 's2', 's3', 's4' and 7 more "
                                         r"\(12 in all\)\."):
        cross_validate_report(_pipeline(), np.zeros((24, 8, 8, 3)), labels,
                              cv=StratifiedKFold(3), heads=HEADS)


def test_report_progress_prints_one_line_per_fold(data, capsys):
    X, y = data
    with report_progress():
        report = cross_validate_report(_pipeline(), X, y, cv=2, heads=HEADS[:1])
    scores = report.heads["KNeighborsClassifier"].folds["balanced_accuracy"]
    lines = capsys.readouterr().out.splitlines()
    # a TripletEmbedder would add its fold's epochs and stop reason (see below)
    assert len(lines) == 4
    assert lines[0] == f"[fold 1/2] training the encoder on {report.folds[0].n_train} images"
    assert re.fullmatch(rf"\[fold 1/2\] balanced accuracy: KNeighborsClassifier "
                        rf"{scores[0]:.3f}; about \d+ s left \(remaining folds and the refit\)",
                        lines[1])
    assert lines[2] == f"[fold 2/2] training the encoder on {report.folds[1].n_train} images"
    assert lines[3] == f"[fold 2/2] balanced accuracy: KNeighborsClassifier {scores[1]:.3f}"
    cross_validate_report(_pipeline(), X, y, cv=2, heads=HEADS[:1])
    assert capsys.readouterr().out == ""


def test_unknown_head_name(data):
    X, y = data
    with pytest.raises(ValueError, match="heads must be names in .*got 'forest'"):
        cross_validate_report(_pipeline(), X, y, heads=("knn", "forest"))


def test_save_writes_all_files_and_json_round_trips(data, tmp_path):
    X, y = data
    report = cross_validate_report(_pipeline(), X, y, cv=2, heads=HEADS)
    paths = report.save(tmp_path / "rep")
    assert {"json", "markdown", "html", "confusion_matrix", "embeddings_2d",
            "training_curves"} <= set(paths)
    assert all(Path(path).is_file() for path in paths.values())
    parsed = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert parsed["best_head"] == report.best_head
    assert parsed["folds"][0]["history"]["val_map_at_r"] == [0.5, None]
    assert parsed["retrieval"]["k"] == 4 and parsed["cv"]["n_splits"] == 2
    rebuilt = Report.from_dict(parsed)
    assert rebuilt == report and isinstance(rebuilt.heads["LogisticRegression"], HeadResult)
    assert isinstance(rebuilt.folds[1], FoldRecord) and rebuilt.folds[1].index == 1
    markdown = (tmp_path / "rep" / "report.md").read_text()
    assert markdown == report.to_markdown({k: Path(v).name for k, v in paths.items()
                                           if k not in ("json", "markdown", "html")})
    assert "![confusion matrix](confusion_matrix.png)" in markdown
    assert not [p.name for p in (tmp_path / "rep").iterdir() if p.name.startswith(".")]
    with pytest.raises(ValueError, match=r"report data lacks the fields \['warnings'\]"):
        Report.from_dict({k: v for k, v in parsed.items() if k != "warnings"})
    del parsed["heads"]["LogisticRegression"]["std"]
    with pytest.raises(ValueError, match=r"lacks the fields \['std'\] of HeadResult"):
        Report.from_dict(parsed)


def _hand_report(classes=("s2", "s10"), matrix=((3, 1), (0, 4)), validation=None, k=2):
    """A report with known numbers, for exact text checks."""
    head = HeadResult(
        estimator="KNeighborsClassifier(n_neighbors=3)",
        folds={"accuracy": [0.75, 1.0], "balanced_accuracy": [0.7, 0.8],
               "f1_macro": [0.6, 1.0], "fit_time": [0.01, 0.03], "predict_time": [0.0, 0.0]},
        mean={"accuracy": 0.875, "balanced_accuracy": 0.75, "f1_macro": 0.8,
              "fit_time": 0.02, "predict_time": 0.0},
        std={"accuracy": 0.125, "balanced_accuracy": 0.05, "f1_macro": 0.2,
             "fit_time": 0.01, "predict_time": 0.0},
        confusion_matrix=[list(r) for r in matrix],
        classification_report={"s2": {"precision": 1.0, "recall": 0.75, "f1-score": 0.857,
                                      "support": 4}})
    retrieval = RetrievalResult(
        folds=[{"precision_at_1": 0.5, "knn_accuracy": 0.25, "n_queries": 4},
               {"precision_at_1": 1.0, "knn_accuracy": None, "n_queries": 4}],
        mean={"precision_at_1": 0.75, "knn_accuracy": 0.625},
        std={"precision_at_1": 0.25, "knn_accuracy": 0.375}, k=k, note="k note.")
    fold = FoldRecord(0, 4, 4, 1.5, 0.1, {"loss": [0.4, 0.3]},
                      {"used": False, "reason": "2 images per class", "n_images": 0})
    return Report(
        heads={"knn": head}, best_head="knn", best_head_rule="rule", classes=list(classes),
        n_samples=8, cv=CVInfo(2, "StratifiedKFold(2)", 0, None), refit_encoder="per_fold",
        embedder=EmbedderInfo("TripletEmbedder", {"encoder": "tiny_cnn"}, False, {}, None,
                              None),
        folds=[fold], retrieval=retrieval, embedding_2d={}, validation=validation,
        warnings=["w1"], notes=["n1"])


def test_markdown_and_summary_show_the_typed_values():
    report = _hand_report(validation="Validation was skipped (2 images per class): ...")
    text = report_markdown(report, {"confusion_matrix": "cm.png"})
    for line in [
        "- images: 8, classes (2): s2, s10",
        "- embedder: `TripletEmbedder` (encoder `tiny_cnn`)",
        "> **Warning:** w1",
        "> **Validation:** Validation was skipped (2 images per class): ...",
        "- n1",
        "| balanced accuracy | 0.750 ± 0.050 |",
        "| head fit time (s per fold) | 0.0200 ± 0.0100 |",
        "| knn | macro-F1 | 0.600 | 1.000 |",
        "| s2 | 4 | 1.00 / 0.75 / 0.86 |",
        "| s10 | 0 | 0.00 / 0.00 / 0.00 |",
        "| true \\ pred | s2 | s10 |",
        "| s2 | 3 | 1 |",
        "| kNN accuracy (k=2) | 0.625 ± 0.375 | 0.250 | n/a |",
        "k note.",
        "| fold 1 | 2 | 0.3000 | n/a | n/a | skipped | 1.5 |",
        "![confusion matrix](cm.png)",
    ]:
        assert line in text.splitlines(), line
    summary = report_summary(report).splitlines()
    assert summary[1] == ("knn          0.875 ± 0.125   0.750 ± 0.050   0.800 ± 0.200    "
                          "0.020     0.000")
    assert summary[3] == "held-out retrieval: P@1 0.750, kNN accuracy (k=2) 0.625"
    assert summary[5] == "note: Validation was skipped (2 images per class): ..."
    assert summary[6] == "WARNING: w1"


def test_markdown_lists_confused_pairs_above_30_classes():
    names = [f"c{i}" for i in range(40)]
    matrix = np.diag(np.full(40, 5))
    matrix[3, 7], matrix[3, 3], matrix[12, 0] = 2, 3, 1
    report = _hand_report(classes=names, matrix=matrix.tolist())
    assert confused_pairs(matrix, names) == [("c3", "c7", 2, 0.4), ("c12", "c0", 1, 1 / 6)]
    text = report.to_markdown()
    assert "| c3 | c7 | 2 | 40.0% |" in text and "| c12 | c0 | 1 | 16.7% |" in text
    assert "| true \\ pred |" not in text
    assert "- images: 8, classes (40): c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, " in text
    assert "c19 and 20 more" in text


def test_classes_are_in_natural_order(data):
    X, y = data
    names = np.asarray(["s10", "s2", "s1", "s11", "s3"])[y]
    report = cross_validate_report(_pipeline(), X, names, cv=2, heads=HEADS[:1])
    assert report.classes == ["s1", "s2", "s3", "s10", "s11"]
    head = report.heads["KNeighborsClassifier"]
    assert list(head.classification_report)[:5] == report.classes
    expected = cross_val_predict(_pipeline(), X, names, cv=StratifiedKFold(
        2, shuffle=True, random_state=0))
    np.testing.assert_array_equal(head.confusion_matrix,
                                  confusion_matrix(names, expected, labels=report.classes))
    assert "classes (5): s1, s2, s3, s10, s11" in report.to_markdown()


def test_40_classes_of_10_images():
    X, y = make_shapes(10, size=8, n_classes=40)
    names = np.asarray([f"s{i + 1}" for i in range(40)])[y]
    report = cross_validate_report(_pipeline(), X, names, cv=5, heads=HEADS[:1])
    assert report.classes == [f"s{i + 1}" for i in range(40)]  # s1, s2, ..., s10, ...
    assert report.retrieval.k == 1  # 2 held-out images per class and fold
    assert "kNN accuracy (k=1) " in report.summary()
    text = report.to_markdown()
    assert "## Most confused classes of KNeighborsClassifier" in text
    assert "classes (40): s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11," in text
    assert json.loads(report.to_json())["classes"][9] == "s10"


def test_retrieval_is_undefined_when_no_held_out_class_has_two_images():
    X, y = make_shapes(2, size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning from retrieval_scores
        report = cross_validate_report(_pipeline(), X, y, cv=2, heads=HEADS[:1])
    assert report.retrieval.mean == {"precision_at_1": None, "r_precision": None,
                                     "map_at_r": None}
    assert report.retrieval.folds[0] == {"precision_at_1": None, "r_precision": None,
                                         "map_at_r": None, "n_queries": 0}
    assert "| P@1 | n/a | n/a | n/a |" in report.to_markdown()
    assert "held-out retrieval" not in report.summary()
    assert Report.from_dict(json.loads(report.to_json())) == report


def test_knn_k_follows_the_smallest_held_out_class():
    y = np.asarray([0] * 9 + [1] * 6 + [2] * 20)
    splits = list(StratifiedKFold(3).split(np.zeros(35), y))  # class 1: 2 per test fold
    k, note = choose_knn_k(y, splits)
    assert k == 1 and note == (
        "kNN accuracy: majority vote of the k=1 nearest held-out neighbours (at most 5, "
        "and at most the smallest held-out class, 2 images, minus one).")
    assert choose_knn_k(np.repeat([0, 1], 40), [(np.arange(0), np.arange(80))])[0] == 5
    k, note = choose_knn_k(y, list(StratifiedKFold(5).split(np.zeros(35), y)))
    assert k is None and note.startswith("kNN accuracy is left out: a test fold holds a "
                                         "single image of some class")


def test_report_leaves_knn_accuracy_out_with_single_image_classes():
    X, y = make_shapes([6, 6, 4, 6, 6], size=8)
    report = cross_validate_report(_pipeline(), X, y, cv=4, heads=HEADS[:1])
    assert report.retrieval.k is None and "knn_accuracy" not in report.retrieval.mean
    assert "kNN accuracy" not in report.summary()
    assert "| P@1 |" in report.to_markdown()


def test_validation_note_says_why_and_what_it_means():
    skipped = {"used": False, "reason": "2 images per class, needs 2 for validation",
               "n_images": 0}
    used = {"used": True, "reason": None, "n_images": 5}
    tail = ("without a validation split there was no early stopping and no restore of the "
            "best weights; the encoder of the last epoch was kept.")
    assert _validation_note([skipped, skipped], per_fold=True) == (
        "Validation was skipped in all 2 folds (2 images per class, needs 2 for "
        f"validation): {tail}")
    assert _validation_note([used, skipped, None], per_fold=True).startswith(
        "Validation was skipped in 1 of 3 folds (2 images per class")
    assert _validation_note([skipped], per_fold=False).startswith(
        "Validation was skipped for the encoder (")
    assert _validation_note([used, None], per_fold=True) is None
    reasons = [dict(skipped, reason=f"r{i}") for i in range(4)]
    assert "('r0', 'r1' and 2 more (4 in all))" in _validation_note(reasons, per_fold=True)


def test_real_embedder_reports_skipped_validation_and_matches_an_independent_fit():
    from pipelines.factory import make_triplet_pipeline
    from tests._helpers import tiny_embedder

    X, y = make_shapes(6, size=16)  # 3 images per class and fold: too few to validate
    pipeline = make_triplet_pipeline(tiny_embedder(epochs=2, samples_per_class=3), "logreg")
    report = cross_validate_report(pipeline, X, y, cv=2, heads=("knn", "logreg"))
    assert report.embedder.params["encoder"] == "tiny_cnn" and report.embedder.frozen is False
    assert [len(h["loss"]) for h in report.histories] == [2, 2]
    assert [f.validation["used"] for f in report.folds] == [False, False]
    assert report.validation.startswith("Validation was skipped in all 2 folds (")
    assert "> **Validation:** Validation was skipped in all 2 folds" in report.to_markdown()
    # training is reproducible with random_state: the first fold refitted by sklearn alone
    first_fold = next(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))
    expected = cross_val_score(pipeline, X, y, cv=[first_fold], scoring="balanced_accuracy")
    assert report.heads["logreg"].folds["balanced_accuracy"][0] == expected[0]


@pytest.fixture(scope="module")
def saved_encoder(tmp_path_factory):
    from tests._helpers import tiny_embedder

    X, y = make_shapes(6, size=16)
    path = tmp_path_factory.mktemp("enc") / "enc.keras"
    tiny_embedder(epochs=1, samples_per_class=3).fit(X[::2], y[::2]).save_encoder(path)
    return path, X, y


@pytest.mark.parametrize("refit", ["never", "per_fold"])
def test_frozen_embedder_is_used_frozen_in_both_refit_modes(saved_encoder, refit):
    from embedder import FrozenEmbedder

    path, X, y = saved_encoder
    pipeline = _pipeline(FrozenEmbedder(path))
    with pytest.warns(UserWarning, match="^15 of the 30 evaluated images were in the "
                                         "encoder's training set"):
        report = cross_validate_report(pipeline, X, y, cv=2, heads=HEADS[:1],
                                       refit_encoder=refit)
    assert report.embedder.frozen is True and report.embedder.class_name == "FrozenEmbedder"
    assert report.notes[0] == (
        f"The encoder was NOT refitted inside the folds (refit_encoder='{refit}'): the saved "
        f"encoder {str(path)!r} was used frozen (FrozenEmbedder); only the heads were "
        "cross-validated.")
    assert report.validation is None and report.histories == [{}]
    assert [f.embed_time for f in report.folds] == [None, None]
    assert "No encoder was trained during this evaluation." in report.to_markdown()


def test_progress_tail_says_how_training_stopped_and_the_time_left():
    import time

    from pipelines.report.folds import FoldTask, _progress_tail

    idx = np.arange(4)
    stop = {"stop_reason": "converged: active_fraction <= 0.001 for 2 epochs",
            "epochs_run": 9, "epoch_kept": 7}
    first = FoldTask(0, idx, idx, 3, False, started=time.perf_counter() - 10.0)
    tail = _progress_tail(first, stop)
    # 10 s for one fold: two more folds and the refit, about 30 s
    assert re.fullmatch(r"; 9 epochs, kept epoch 7 \(converged: active_fraction <= 0.001 "
                        r"for 2 epochs\); about 3[0-2] s left \(remaining folds and the "
                        r"refit\)", tail)
    last = FoldTask(2, idx, idx, 3, False, started=time.perf_counter())
    assert _progress_tail(last, None) == ""


def test_refit_plan_trains_the_median_kept_epoch_without_a_split():
    from types import SimpleNamespace

    from pipelines.report.cross_validation import _stop_note, refit_plan

    stops = [{"epochs_run": 9, "epoch_kept": 4, "stop_reason": "plateau: ..."},
             {"epochs_run": 12, "epoch_kept": 7, "stop_reason": "converged: ..."},
             {"epochs_run": 20, "epoch_kept": 6, "stop_reason": "reached epochs=20"},
             {"epochs_run": 8, "epoch_kept": 5, "stop_reason": "plateau: ..."}]
    report = SimpleNamespace(n_samples=880, folds=[SimpleNamespace(validation=v) for v in stops])
    plan = refit_plan(report)
    assert plan["epochs"] == 6  # median 5.5, rounded up
    assert plan["params"] == {"epochs": 6, "validation_fraction": 0.0}
    assert plan["note"] == ("Refit: the saved model's encoder was trained on all 880 images "
                            "for 6 epochs, the median of the epochs the folds kept (4, 7, 6, "
                            "5), without a validation split.")
    assert _stop_note(stops[:2]) == ("Training stopped - fold 1: 9 epochs, kept epoch 4 "
                                     "(plateau: ...); fold 2: 12 epochs, kept epoch 7 "
                                     "(converged: ...).")
    frozen = SimpleNamespace(n_samples=10, folds=[SimpleNamespace(validation=None)])
    assert refit_plan(frozen) is None and _stop_note([None]) is None
