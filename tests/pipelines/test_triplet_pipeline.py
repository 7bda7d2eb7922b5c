"""The real TripletEmbedder inside sklearn pipelines: heads, CV, grid search, persistence."""

import pickle

import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score

from classifiers import HEADS
from embedder import FrozenEmbedder
from embedder.embedding_cache import EmbeddingCache
from pipelines import load_pipeline, make_triplet_pipeline, save_pipeline
from tests._helpers import TINY_SHAPE, tiny_embedder

SHAPE = TINY_SHAPE
_embedder = tiny_embedder



@pytest.fixture(scope="module")
def split(shapes16):
    X, y = shapes16
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    train, test = order[:90], order[90:]
    return X[train], y[train], X[test], y[test]


@pytest.fixture(scope="module")
def encoder_path(split, tmp_path_factory):
    X_train, y_train, _, _ = split
    path = tmp_path_factory.mktemp("enc") / "encoder.keras"
    return str(_embedder().fit(X_train, y_train).save_encoder(path))


@pytest.mark.parametrize("head", HEADS)
def test_each_head_fits_predicts_and_scores(split, head):
    X_train, y_train, X_test, y_test = split
    pipe = make_triplet_pipeline(_embedder(), head).fit(X_train, y_train)
    pred = pipe.predict(X_test)
    assert pred.shape == y_test.shape and set(pred) <= set(y_train)
    assert pipe.score(X_test, y_test) > 0.5  # chance is 0.2
    proba = pipe.predict_proba(X_test)
    assert proba.shape == (len(X_test), 5)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(pipe.classes_, np.arange(5))


def test_cross_val_score_trains_inside_each_fold(shapes16):
    X, y = shapes16
    scores = cross_val_score(make_triplet_pipeline(_embedder(), "knn"), X, y,
                             cv=StratifiedKFold(2, shuffle=True, random_state=0))
    assert scores.shape == (2,) and np.all(scores > 0.5)


def test_grid_search_over_head_embeds_each_image_once(split, encoder_path):
    X_train, y_train, _, _ = split
    cache = EmbeddingCache()
    pipe = make_triplet_pipeline(FrozenEmbedder(encoder_path, cache=cache), "knn")
    search = GridSearchCV(pipe, {"head__n_neighbors": [1, 3, 5, 7]}, cv=3).fit(
        X_train, y_train
    )
    assert search.best_score_ > 0.5
    # 4 candidates x 3 folds + the refit embed the same 90 images: each is embedded once
    assert cache.misses == len(X_train)
    assert cache.hits > 10 * len(X_train)
    # another shape is another key: nothing is served from the first shape's rows
    FrozenEmbedder(encoder_path, input_shape=(8, 8, 3), cache=cache).fit(
        X_train).transform(X_train)
    assert cache.misses == 2 * len(X_train)


def test_frozen_pipeline_keeps_encoder_weights(split, encoder_path):
    X_train, y_train, X_test, _ = split
    frozen = FrozenEmbedder(encoder_path, input_shape=SHAPE)
    a = make_triplet_pipeline(frozen, "logreg").fit(X_train, y_train)
    b = make_triplet_pipeline(frozen, "logreg").fit(X_train[::-1], y_train[::-1])
    emb_a = a.named_steps["embed"].transform(X_test)
    np.testing.assert_array_equal(emb_a, b.named_steps["embed"].transform(X_test))
    assert not hasattr(a.named_steps["embed"], "history_")


@pytest.mark.parametrize("how", ["pickle", "joblib", "save_pipeline"])
def test_round_trips_predict_identically(split, tmp_path, how):
    X_train, y_train, X_test, _ = split
    pipe = make_triplet_pipeline(_embedder(), "svm").fit(X_train, y_train)
    if how == "pickle":
        other = pickle.loads(pickle.dumps(pipe))
    elif how == "joblib":
        joblib.dump(pipe, tmp_path / "p.joblib")
        other = joblib.load(tmp_path / "p.joblib")
    else:
        save_pipeline(pipe, tmp_path / "p.joblib")
        other = load_pipeline(tmp_path / "p.joblib")
        assert joblib.load(tmp_path / "p.joblib").predict(X_test).tolist() == \
            pipe.predict(X_test).tolist()
    np.testing.assert_array_equal(other.predict(X_test), pipe.predict(X_test))
    np.testing.assert_array_equal(other.predict_proba(X_test), pipe.predict_proba(X_test))


def test_path_inputs_in_a_pipeline(split, tmp_path):
    from tests._images import write_image_folder

    X_train, y_train, X_test, y_test = split
    train_paths = write_image_folder(tmp_path / "train", X_train, y_train)
    test_paths = write_image_folder(tmp_path / "test", X_test, y_test)
    pipe = make_triplet_pipeline(_embedder(), "knn").fit(train_paths, y_train)
    from_arrays = make_triplet_pipeline(_embedder(), "knn").fit(X_train, y_train)
    assert pipe.score(test_paths, y_test) > 0.5
    # PNG round trip is lossless, so both pipelines learn the same thing
    np.testing.assert_array_equal(pipe.predict(test_paths), from_arrays.predict(X_test))
