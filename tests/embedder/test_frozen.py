"""FrozenEmbedder: a saved encoder as a stage-two transformer, trains nothing."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import check_estimator

from embedder import FrozenEmbedder
from tests._helpers import TINY_SHAPE, tiny_embedder
from tests._images import write_image_folder


@pytest.fixture(scope="module")
def trained(shapes16, tmp_path_factory):
    X, y = shapes16
    fitted = tiny_embedder().fit(X, y)
    path = fitted.save_encoder(tmp_path_factory.mktemp("enc") / "enc.keras")
    return fitted, str(path)


def test_fit_trains_nothing_and_y_is_optional(trained, shapes16):
    fitted, path = trained
    X, y = shapes16
    frozen = FrozenEmbedder(path).fit(X[:7])
    assert frozen.input_shape_ == TINY_SHAPE and frozen.n_features_in_ == 16 * 16 * 3
    np.testing.assert_array_equal(frozen.training_fingerprints_, fitted.training_fingerprints_)
    np.testing.assert_allclose(frozen.transform(X), fitted.transform(X), atol=1e-6)
    assert len(frozen.encoder_sha256_) == 64
    assert not hasattr(frozen, "history_")
    assert FrozenEmbedder(path).fit(X, y).transform(X[:3]).shape == (3, 8)


def test_clones_do_not_share_a_model(trained, shapes16):
    X, _ = shapes16
    a = FrozenEmbedder(trained[1]).fit(X)
    b = clone(a).fit(X)
    assert a.encoder_ is not b.encoder_


def test_input_shape_changes_the_embeddings_in_one_process(trained, shapes16, tmp_path):
    """The old process-wide cache returned the first shape's embeddings for every shape."""
    _, path = trained
    X, y = shapes16
    paths = write_image_folder(tmp_path, X[:40], y[:40])
    small = FrozenEmbedder(path, input_shape=(4, 4, 3)).fit(paths).transform(paths)
    large = FrozenEmbedder(path, input_shape=(16, 16, 3)).fit(paths).transform(paths)
    assert np.abs(small - large).max() > 0.01


def test_grid_search_over_input_shape_scores_each_candidate(trained, shapes16, tmp_path):
    _, path = trained
    X, y = shapes16
    paths = np.asarray(write_image_folder(tmp_path, X, y), dtype=object)
    pipe = Pipeline([("embed", FrozenEmbedder(path)),
                     ("head", KNeighborsClassifier(n_neighbors=1))])
    search = GridSearchCV(pipe, {"embed__input_shape": [(2, 2, 3), (16, 16, 3)]}, cv=3)
    search.fit(paths, y)
    low, high = search.cv_results_["mean_test_score"]
    assert high > low + 0.1  # 2x2 pixels cannot tell the shapes apart; 16x16 can
    assert search.best_params_ == {"embed__input_shape": (16, 16, 3)}


def test_errors_name_the_file(trained, shapes16, tmp_path):
    _, path = trained
    X, _ = shapes16
    with pytest.raises(ValueError, match=r"encoder file '.*enc.keras' reads images with 3 "
                       r"channels, but the images have 1"):
        FrozenEmbedder(path).fit(X[..., :1])
    with pytest.raises(ValueError, match=r"encoder file '.*missing.keras' does not exist"):
        FrozenEmbedder(str(tmp_path / "missing.keras")).fit(X)
    with pytest.raises(ValueError, match=r"X has 0 images; expected at least 1 image"):
        FrozenEmbedder(path).fit(np.zeros((0, 16, 16, 3)))


def test_passes_sklearn_estimator_checks(trained, tmp_path):
    # a 1-channel encoder: the checks pass 2-D arrays, read as 1-pixel-high grey strips
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X[:60].reshape(-1, 8, 8, 1) * 16
    path = tiny_embedder(input_shape=(8, 8, 1), epochs=1).fit(X, y[:60]).save_encoder(
        tmp_path / "grey.keras")
    check_estimator(FrozenEmbedder(str(path)), expected_failed_checks={
        "check_methods_sample_order_invariance": (
            "float32 convolutions (oneDNN) can differ in the last bit with an image's "
            "position in the batch"),
    })
