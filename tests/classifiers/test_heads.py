
import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import make_blobs
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import normalize
from sklearn.svm import SVC

from classifiers import HEADS, make_head
from classifiers.heads import SmallestClassFolds
from tests._helpers import run_without_tensorflow


@pytest.fixture(scope="module")
def embeddings():
    """Unit-norm rows in 3 well separated clusters, like a trained embedding."""
    X, y = make_blobs(n_samples=90, centers=3, n_features=8, cluster_std=0.5, random_state=0)
    return normalize(X), y


def test_heads_are_the_three_names():
    assert HEADS == ("knn", "logreg", "svm")


@pytest.mark.parametrize(
    "name, cls, defaults",
    [
        ("knn", KNeighborsClassifier, {"n_neighbors": 5, "weights": "distance"}),
        ("logreg", LogisticRegression, {"C": 10.0, "max_iter": 1000}),
        ("svm", SVC, {"kernel": "rbf", "C": 10.0, "gamma": "scale"}),
    ],
)
def test_defaults(name, cls, defaults):
    head = make_head(name)
    assert is_classifier(head)
    inner = head.estimator if isinstance(head, CalibratedClassifierCV) else head
    assert type(inner) is cls
    params = inner.get_params()
    assert {key: params[key] for key in defaults} == defaults
    assert not hasattr(inner, "classes_")  # unfitted


@pytest.mark.parametrize("name", HEADS)
def test_fit_predict_proba(embeddings, name):
    X, y = embeddings
    head = make_head(name).fit(X, y)
    assert head.score(X, y) == 1.0
    proba = head.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(head.classes_[proba.argmax(axis=1)], head.predict(X))


def test_svm_probability_false_is_a_bare_svc(embeddings):
    X, y = embeddings
    head = make_head("svm", probability=False)
    assert type(head) is SVC and head.C == 10.0
    head.fit(X, y)
    np.testing.assert_array_equal(head.predict(X), y)
    assert not hasattr(head, "predict_proba")


def test_svm_is_temperature_calibrated_on_at_most_three_folds():
    head = make_head("svm")
    assert isinstance(head, CalibratedClassifierCV)
    assert (head.ensemble, head.method) == (False, "temperature")
    assert isinstance(head.cv, SmallestClassFolds) and head.cv.max_splits == 3


def _faces_like(n_classes=40, per_class=10, dim=64, noise=0.17, seed=0):
    """Unit-norm embeddings of many identities with few images each (issue 13's case)."""
    rng = np.random.default_rng(seed)
    centres = normalize(rng.normal(size=(n_classes, dim)))
    noise = noise * rng.normal(size=(n_classes * per_class, dim))
    X = np.repeat(centres, per_class, axis=0) + noise
    return normalize(X), np.repeat(np.arange(n_classes), per_class)


def test_many_classes_few_images():
    # 40 classes x 10 images, 5 folds: 8 training images per class. The former
    # sigmoid-calibrated SVM (cv=3) scored 0.878 here against logreg's 0.992.
    X, y = _faces_like()
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    scores = {name: cross_val_score(make_head(name), X, y, cv=folds).mean() for name in HEADS}
    assert scores == pytest.approx({"knn": 0.978, "logreg": 0.992, "svm": 0.990}, abs=0.006)
    best = max(scores.values())
    assert all(best - score <= 0.02 for score in scores.values()), scores


def test_svm_predictions_are_the_bare_svcs():
    # One temperature cannot move the argmax: the calibrated head predicts what the SVC
    # fitted on all training images predicts (its vote, ties broken by the decision values).
    X, y = _faces_like(n_classes=12, per_class=4, noise=0.2)
    calibrated = make_head("svm").fit(X, y)
    bare = make_head("svm", probability=False, break_ties=True).fit(X, y)
    queries = _faces_like(n_classes=12, per_class=4, noise=0.2, seed=1)[0]
    np.testing.assert_array_equal(calibrated.predict(queries), bare.predict(queries))


def test_svm_calibration_folds_follow_the_smallest_class():
    X, y = _faces_like(n_classes=3, per_class=6)
    y = y.astype(str)
    keep = np.r_[0:2, 6:18]  # class "0" keeps 2 images: 2 folds instead of 3
    head = make_head("svm").fit(X[keep], y[keep])
    assert head.predict_proba(X).shape == (18, 3)
    np.testing.assert_allclose(head.predict_proba(X).sum(axis=1), 1.0)
    assert SmallestClassFolds().get_n_splits(y=y[keep]) == 2
    assert SmallestClassFolds().get_n_splits(y=y) == 3
    assert SmallestClassFolds().get_n_splits() == 3
    with pytest.raises(ValueError, match=r"needs at least 2 training images per class; "
                                         r"1 of the 3 classes have 1\. Use make_head\('svm', "
                                         r"probability=False\)"):
        make_head("svm").fit(X[keep][1:], y[keep][1:])


def test_svm_binary_probabilities():
    X, y = _faces_like(n_classes=2, per_class=6, noise=0.3)
    head = make_head("svm").fit(X, y)
    proba = head.predict_proba(X)
    assert proba.shape == (12, 2)
    np.testing.assert_array_equal(head.classes_[proba.argmax(axis=1)], head.predict(X))


@pytest.mark.parametrize(
    "name, params, get",
    [
        ("knn", {"n_neighbors": 3, "weights": "uniform"}, lambda h: (h.n_neighbors, h.weights)),
        ("logreg", {"C": 0.5}, lambda h: (h.C, h.max_iter)),
        ("svm", {"C": 2.0, "kernel": "linear"}, lambda h: (h.estimator.C, h.estimator.kernel)),
    ],
)
def test_params_override_defaults(name, params, get):
    expected = {
        "knn": (3, "uniform"),
        "logreg": (0.5, 1000),  # max_iter keeps its default
        "svm": (2.0, "linear"),
    }[name]
    head = make_head(name, **params)
    assert get(head) == expected
    assert get(clone(head)) == expected


def test_unknown_name():
    message = r"head must be one of \['knn', 'logreg', 'svm'\], got 'foo'"
    with pytest.raises(ValueError, match=message):
        make_head("foo")
    with pytest.raises(ValueError, match="head must be one of .*, got None"):
        make_head(None)


@pytest.mark.parametrize("name", HEADS)
def test_unknown_param_is_named(name):
    with pytest.raises(TypeError, match=f"unknown parameter 'n_trees' for head '{name}'"):
        make_head(name, n_trees=3)


def test_probability_only_for_svm():
    with pytest.raises(TypeError, match="unknown parameter 'probability' for head 'knn'"):
        make_head("knn", probability=True)
    with pytest.raises(TypeError, match="probability must be True or False, got 'yes'"):
        make_head("svm", probability="yes")


def test_no_tensorflow_import():
    code = (
        "from classifiers import make_head\n"
        "import numpy as np\n"
        "X = np.repeat(np.eye(2), 3, axis=0); y = [0, 0, 0, 1, 1, 1]\n"
        "print(make_head('svm').fit(X, y).predict(X).tolist())\n"
    )
    assert run_without_tensorflow(code) == "[0, 0, 0, 1, 1, 1]"


def test_an_estimator_instance_is_cloned_with_the_params(embeddings):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    forest = RandomForestClassifier(max_depth=3)
    head = make_head(forest, n_estimators=7, random_state=0)
    assert type(head) is RandomForestClassifier and head is not forest
    assert head.get_params()["max_depth"] == 3 and head.n_estimators == 7
    assert forest.n_estimators == 100  # the given one is left alone
    X, y = embeddings
    assert head.fit(X, y).score(X, y) > 0.9
    piped = make_head(make_pipeline(StandardScaler(), LogisticRegression()),
                      logisticregression__C=3.0)
    assert piped.get_params()["logisticregression__C"] == 3.0


def test_an_estimator_instance_must_be_a_classifier():
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier

    with pytest.raises(TypeError, match="^head must be a head name or a scikit-learn "
                       "classifier, got PCA, which is not a classifier$"):
        make_head(PCA())
    with pytest.raises(TypeError, match="^unknown parameter 'C' for head "
                       "RandomForestClassifier; its parameters are those of its "
                       "get_params\\(\\)$"):
        make_head(RandomForestClassifier(), C=1.0)
