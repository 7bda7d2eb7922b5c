
import numpy as np
import pytest
from joblib import Memory
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer

from pipelines import make_triplet_pipeline
from tests._helpers import run_without_tensorflow


@pytest.fixture(scope="module")
def data():
    return make_blobs(n_samples=60, centers=3, n_features=6, random_state=0)


@pytest.mark.parametrize("head", ["knn", "logreg", "svm"])
def test_named_heads(data, head):
    X, y = data
    pipe = make_triplet_pipeline(PCA(n_components=3), head)
    assert isinstance(pipe, Pipeline)
    assert [name for name, _ in pipe.steps] == ["embed", "head"]
    pipe.fit(X, y)
    assert pipe.score(X, y) == 1.0
    np.testing.assert_allclose(pipe.predict_proba(X).sum(axis=1), 1.0)


def test_head_instance_is_used_as_given(data):
    X, y = data
    embed = FunctionTransformer(lambda Z: Z / np.linalg.norm(Z, axis=1, keepdims=True))
    head = KNeighborsClassifier(n_neighbors=1)
    pipe = make_triplet_pipeline(embed, head)
    assert pipe.named_steps["embed"] is embed and pipe.named_steps["head"] is head
    assert pipe.fit(X, y).named_steps["head"].n_samples_fit_ == 60


def test_memory_caches_the_embedder(data, tmp_path):
    X, y = data
    memory = Memory(tmp_path, verbose=0)
    pipe = make_triplet_pipeline(PCA(n_components=3), "knn", memory=memory)
    assert pipe.memory is memory
    search = GridSearchCV(pipe, {"head__n_neighbors": [1, 3]}, cv=3).fit(X, y)
    assert search.best_score_ == 1.0
    assert any(tmp_path.rglob("*.pkl"))  # fitted embedders were cached


def test_cross_val_score_with_svm_head_params(data):
    X, y = data
    pipe = make_triplet_pipeline(Normalizer(), "svm")
    pipe.set_params(head__estimator__C=1.0)
    assert cross_val_score(pipe, X, y, cv=3).mean() == 1.0


def test_unknown_head_name():
    with pytest.raises(
        ValueError, match=r"head must be one of \['knn', 'logreg', 'svm'\], got 'rf'"
    ):
        make_triplet_pipeline(PCA(), "rf")


@pytest.mark.parametrize(
    "embedder, head, match",
    [
        (PCA, "knn", "embedder must be an estimator instance, got the class PCA"),
        (
            KNeighborsClassifier(),
            "knn",
            "embedder must be a transformer with fit and transform, got KNeighborsClassifier "
            "without transform",
        ),
        (
            PCA(),
            KNeighborsClassifier,
            "head must be an estimator instance, got the class KNeighborsClassifier",
        ),
        (PCA(), 3, "head must be a head name or a classifier with fit and predict, got int"),
        (
            PCA(),
            Normalizer(),
            "head must be a head name or a classifier .* got Normalizer without predict",
        ),
    ],
)
def test_type_errors_name_the_argument(embedder, head, match):
    with pytest.raises(TypeError, match=match):
        make_triplet_pipeline(embedder, head)


def test_calibrated_svm_head_from_name():
    assert isinstance(
        make_triplet_pipeline(PCA(), "svm").named_steps["head"], CalibratedClassifierCV
    )


def test_no_tensorflow_import():
    code = (
        "from sklearn.decomposition import PCA\n"
        "from pipelines import make_triplet_pipeline\n"
        "print(make_triplet_pipeline(PCA(), 'knn').steps[1][0])\n"
    )
    assert run_without_tensorflow(code) == "head"
