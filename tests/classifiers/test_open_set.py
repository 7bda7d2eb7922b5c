"""OpenSetClassifier on tiny hand-made embeddings: scores, threshold, rejection, checks."""

import math

import numpy as np
import pytest
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from classifiers import OpenSetClassifier
from tests._helpers import run_without_tensorflow

# Two squares of side 2: class "a" around (1, 1), class "b" around (11, 11).
SQUARE_A = [[0, 0], [0, 2], [2, 0], [2, 2]]
SQUARE_B = [[10, 10], [10, 12], [12, 10], [12, 12]]

_TRAIN_REJECTS = (
    "predict returns unknown_label for training points above the calibrated threshold "
    "(about 1 - target_tpr of them, by design), so predictions differ from y and from "
    "the argmax of the head's predict_proba/decision_function"
)


def _expected_failed_checks(estimator):
    failed = {"check_classifiers_train": _TRAIN_REJECTS}
    if estimator.open_set_score == "centroid":  # rejects a training point on its data
        failed["check_classifiers_classes"] = _TRAIN_REJECTS
    return failed


def _blobs(n_per_class=20, seed=0):
    """Two tight 2-D clusters (std 0.05) at (0, 0) and (1, 0), labels "a" and "b"."""
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal([0.0, 0.0], 0.05, (n_per_class, 2)),
                   rng.normal([1.0, 0.0], 0.05, (n_per_class, 2))])
    return X, np.repeat(np.array(["a", "b"]), n_per_class)


def _checked():
    # An integer unknown_label keeps predictions integer, as the checks' labels are.
    return [OpenSetClassifier(KNeighborsClassifier(), unknown_label=-99, random_state=0),
            OpenSetClassifier(LogisticRegression(), open_set_score="centroid",
                              unknown_label=-99, random_state=0),
            OpenSetClassifier(LogisticRegression(), open_set_score="max_proba",
                              unknown_label=-99, random_state=0)]


@parametrize_with_checks(_checked(), expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize("score", ["knn_distance", "centroid", "max_proba"])
def test_far_point_rejected_inside_point_kept(score):
    X, y = _blobs()
    clf = OpenSetClassifier(LogisticRegression(C=10), open_set_score=score, k=1,
                            random_state=0).fit(X, y)
    queries = [[0.01, 0.02], [1.0, -0.01], [0.5, 3.0]]
    assert clf.predict(queries).tolist() == ["a", "b", "unknown"]
    scores = clf.score_samples(queries)
    assert scores[2] > clf.threshold_ >= max(scores[:2])


def test_scores_are_the_documented_distances():
    X, y = np.array(SQUARE_A + SQUARE_B, dtype=float), np.repeat([0, 1], 4)
    query = [[-3.0, -4.0], [1.0, 1.0]]
    knn1 = OpenSetClassifier(KNeighborsClassifier(1), k=1, random_state=0).fit(X, y)
    knn2 = OpenSetClassifier(KNeighborsClassifier(1), k=2, random_state=0).fit(X, y)
    centroid = OpenSetClassifier(KNeighborsClassifier(1), open_set_score="centroid",
                                 random_state=0).fit(X, y)
    # nearest (0, 0) at 5; second nearest (2, 0) at sqrt(41); centroid (1, 1) at sqrt(41)
    np.testing.assert_allclose(knn1.score_samples(query), [5.0, math.sqrt(2)])
    np.testing.assert_allclose(knn2.score_samples(query), [math.sqrt(41), math.sqrt(2)])
    np.testing.assert_allclose(centroid.score_samples(query), [math.sqrt(41), 0.0],
                               atol=1e-12)
    assert knn1.k_ == 1 and centroid.centroids_.tolist() == [[1.0, 1.0], [11.0, 11.0]]


def test_max_proba_score_is_one_minus_top_probability():
    X, y = _blobs()
    clf = OpenSetClassifier(LogisticRegression(), open_set_score="max_proba",
                            random_state=0).fit(X, y)
    Q = np.array([[0.5, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(clf.score_samples(Q), 1 - clf.predict_proba(Q).max(axis=1))


@pytest.mark.parametrize(("target_tpr", "accepted"), [(0.5, 10), (0.9, 18), (0.95, 19),
                                                      (1.0, 20)])
def test_threshold_accepts_target_tpr_of_calibration_points(target_tpr, accepted):
    X, y = _blobs(40)  # calibration_fraction 0.25: 10 held out of each class, 20 in all
    clf = OpenSetClassifier(KNeighborsClassifier(), target_tpr=target_tpr,
                            calibration_fraction=0.25, random_state=0).fit(X, y)
    assert clf.calibration_scores_.shape == (20,)
    assert int((clf.calibration_scores_ <= clf.threshold_).sum()) == accepted
    assert abs(accepted - target_tpr * 20) <= 1
    assert clf.threshold_at(target_tpr) == clf.threshold_


def test_calibration_scores_are_out_of_sample():
    # k=1: a point scored against a reference set that contains it would score 0.
    X, y = _blobs()
    clf = OpenSetClassifier(KNeighborsClassifier(), k=1, random_state=0).fit(X, y)
    assert clf.calibration_scores_.min() > 0
    assert clf.score_samples(X).max() == 0.0  # refitted on all: every point is its own NN


def test_threshold_separates_classes_with_gaps():
    # 1-D: class 0 at 0..9, class 1 at 100..109; spacing 1, so every held-out interior
    # point has its nearest training neighbour at distance 1 or 2.
    X = np.r_[np.arange(10), np.arange(100, 110)].astype(float)[:, None]
    y = np.repeat([0, 1], 10)
    clf = OpenSetClassifier(KNeighborsClassifier(1), k=1, target_tpr=1.0,
                            random_state=0).fit(X, y)
    assert clf.threshold_ in (1.0, 2.0)
    assert clf.predict([[4.5], [50.0], [104.0], [120.0]]).tolist() == [0, "unknown", 1,
                                                                       "unknown"]


def test_output_dtype_holds_classes_and_unknown_label():
    X, y = _blobs()
    y_int = (y == "b").astype(int)
    far = [[0.0, 0.0], [9.0, 9.0]]
    as_int = OpenSetClassifier(KNeighborsClassifier(), unknown_label=-1, random_state=0)
    out = as_int.fit(X, y_int).predict(far)
    assert out.dtype.kind == "i" and out.tolist() == [0, -1]
    out = OpenSetClassifier(KNeighborsClassifier(), random_state=0).fit(X, y_int).predict(far)
    assert out.dtype == object and out.tolist() == [0, "unknown"]
    long_name = OpenSetClassifier(KNeighborsClassifier(), unknown_label="none of the known",
                                  random_state=0)
    assert long_name.fit(X, y).predict(far).tolist() == ["a", "none of the known"]


def test_head_methods_delegate_and_hide():
    X, y = _blobs()
    clf = OpenSetClassifier(LogisticRegression(), random_state=0).fit(X, y)
    np.testing.assert_allclose(clf.predict_proba(X), clf.head_.predict_proba(X))
    np.testing.assert_allclose(clf.decision_function(X), clf.head_.decision_function(X))
    knn = OpenSetClassifier(KNeighborsClassifier(), random_state=0).fit(X, y)
    assert not hasattr(knn, "decision_function")
    assert knn.score(X, y) == 1.0  # ClassifierMixin.score: accuracy, nothing rejected
    assert list(clf.classes_) == ["a", "b"]


def test_frozen_head_is_not_refitted():
    X, y = _blobs()
    head = KNeighborsClassifier(1).fit([[0.0, 0.0], [1.0, 0.0]], ["b", "a"])  # swapped
    clf = OpenSetClassifier(FrozenEstimator(head), random_state=0).fit(X, y)
    assert clf.predict([[0.0, 0.0], [9.0, 9.0]]).tolist() == ["b", "unknown"]
    assert list(clf.classes_) == ["a", "b"]


@pytest.mark.parametrize(("params", "message"), [
    ({"open_set_score": "energy"}, r"'open_set_score' parameter of OpenSetClassifier must "
                                   r"be a str among .*'centroid'.*Got 'energy' instead"),
    ({"target_tpr": 0.0}, r"'target_tpr' parameter of OpenSetClassifier must be a float "
                          r"in the range \(0.0, 1.0\]. Got 0.0 instead"),
    ({"k": 0}, r"'k' parameter of OpenSetClassifier must be an int in the range \[1, inf\)"),
    ({"calibration_fraction": 1.0}, r"'calibration_fraction' parameter .* range \(0.0, 1.0\)"),
    ({"unknown_label": "a"}, r"unknown_label 'a' is also a class label in y; choose an "
                             r"unknown_label that no class uses"),
    ({"head": "knn"}, r"'head' parameter of OpenSetClassifier must be an object "
                      r"implementing 'fit' and 'predict'"),
])
def test_bad_parameters_name_the_parameter(params, message):
    X, y = _blobs()
    clf = OpenSetClassifier(params.pop("head", KNeighborsClassifier()), **params)
    with pytest.raises(ValueError, match=message):
        clf.fit(X, y)


def test_max_proba_needs_predict_proba():
    X, y = _blobs()
    with pytest.raises(ValueError, match=r"open_set_score='max_proba' needs a head with "
                                         r"predict_proba, got SVC without it"):
        OpenSetClassifier(SVC(), open_set_score="max_proba").fit(X, y)


def test_needs_a_class_with_two_samples():
    with pytest.raises(ValueError, match=r"y must have at least one class with 2 or more "
                                         r"samples.*got 2 samples of 2 classes"):
        OpenSetClassifier(KNeighborsClassifier(1)).fit([[0.0], [1.0]], ["a", "b"])


def test_threshold_at_rejects_bad_rate():
    X, y = _blobs()
    clf = OpenSetClassifier(KNeighborsClassifier(), random_state=0).fit(X, y)
    with pytest.raises(ValueError, match=r"target_tpr must be a float in \(0, 1\], got 1.5"):
        clf.threshold_at(1.5)


@pytest.mark.parametrize("suffix", [".joblib", ".skops"])
def test_round_trip_through_save_and_load_pipeline(tmp_path, suffix):
    from pipelines import load_pipeline, save_pipeline

    X, y = _blobs()
    pipe = Pipeline([("embed", FunctionTransformer()),
                     ("head", OpenSetClassifier(KNeighborsClassifier(), random_state=0))])
    pipe.fit(X, y)
    path = save_pipeline(pipe, tmp_path / f"open_set{suffix}")
    loaded = load_pipeline(path)
    Q = np.vstack([X, [[5.0, 5.0], [0.5, 0.4]]])
    assert loaded.predict(Q).tolist() == pipe.predict(Q).tolist()
    assert loaded.predict(Q)[-2] == "unknown"
    np.testing.assert_array_equal(loaded[-1].score_samples(Q), pipe[-1].score_samples(Q))


def test_works_without_tensorflow():
    code = (
        "import numpy as np\n"
        "from sklearn.neighbors import KNeighborsClassifier\n"
        "from classifiers import OpenSetClassifier\n"
        "X = np.array([[0.0], [0.1], [0.2], [1.0], [1.1], [1.2]]); y = [0, 0, 0, 1, 1, 1]\n"
        "clf = OpenSetClassifier(KNeighborsClassifier(1), k=1, random_state=0).fit(X, y)\n"
        "print(clf.predict([[0.05], [9.0]]).tolist())\n"
    )
    assert run_without_tensorflow(code) == "[0, 'unknown']"


def test_frozen_head_refuses_labels_it_does_not_know():
    X, y = _blobs()
    head = KNeighborsClassifier(1).fit(X[::-1][:5], y[::-1][:5])  # knows only "b"
    with pytest.raises(ValueError, match=r"y has 1 labels the head was not trained on "
                                         r"\('a'\); the head's classes are \['b'\]"):
        OpenSetClassifier(FrozenEstimator(head), random_state=0).fit(X, y)


def test_design_spelling_score_is_an_alias():
    clf = OpenSetClassifier(LogisticRegression(), score="centroid")
    assert clf.open_set_score == "centroid" and callable(clf.score)
    assert clf.get_params()["open_set_score"] == "centroid"
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['treshold'\]"):
        OpenSetClassifier(LogisticRegression(), treshold=0.5)
