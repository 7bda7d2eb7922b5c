import copy
import pickle

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

from embedder import FrozenEmbedder
from embedder.metrics import retrieval_scores
from tests._helpers import TINY_SHAPE, tiny_embedder
from tests._images import write_image_folder

SHAPE = TINY_SHAPE
_embedder = tiny_embedder



@pytest.fixture(scope="module")
def fitted(shapes16):
    X, y = shapes16
    return _embedder().fit(X, y)


def test_fit_transform_contract(fitted, shapes16):
    X, y = shapes16
    Z = fitted.transform(X)
    assert Z.dtype == np.float32 and Z.shape == (len(X), 8)
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-5)
    assert fitted.n_features_in_ == 16 * 16 * 3
    assert fitted.input_shape_ == SHAPE
    np.testing.assert_array_equal(fitted.classes_, np.arange(5))
    assert not fitted.collapsed_
    assert fitted.config_.margin == 0.2 and fitted.config_.classes_per_batch == 5
    assert len(fitted.history_["loss"]) == 3
    assert fitted.training_fingerprints_.shape == (len(X),)
    assert list(fitted.get_feature_names_out()) == [f"tripletembedder{i}" for i in range(8)]
    assert retrieval_scores(Z, y)["precision_at_1"] > 0.5


def test_flattened_and_path_inputs_agree(fitted, shapes16, tmp_path):
    X, y = shapes16
    Z = fitted.transform(X[:10])
    np.testing.assert_allclose(fitted.transform(X[:10].reshape(10, -1)), Z, atol=1e-5)
    paths = write_image_folder(tmp_path, X[:10], y[:10])
    np.testing.assert_allclose(fitted.transform(paths), Z, atol=1e-4)
    np.testing.assert_allclose(fitted.transform(np.asarray(paths)), Z, atol=1e-4)


def test_fit_on_paths_with_string_labels(shapes16, tmp_path):
    X, y = shapes16
    paths = write_image_folder(tmp_path, X, y)
    names = np.array(["sq", "disc", "cross", "bar", "tri"])[y]
    est = _embedder(epochs=1).fit(paths, names)
    assert list(est.classes_) == sorted(set(names))
    assert est.transform(paths[:4]).shape == (4, 8)


def test_random_state_makes_training_reproducible(shapes16):
    X, y = shapes16
    a = _embedder(epochs=1).fit(X, y).transform(X[:20])
    b = _embedder(epochs=1).fit(X, y).transform(X[:20])
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("dump", ["pickle", "joblib", "deepcopy"])
def test_round_trips_keep_predictions(fitted, shapes16, tmp_path, dump):
    X, _ = shapes16
    if dump == "pickle":
        other = pickle.loads(pickle.dumps(fitted))
    elif dump == "joblib":
        joblib.dump(fitted, tmp_path / "e.joblib")
        other = joblib.load(tmp_path / "e.joblib")
    else:
        other = copy.deepcopy(fitted)
    assert other.encoder_ is not fitted.encoder_
    np.testing.assert_array_equal(other.transform(X[:16]), fitted.transform(X[:16]))
    assert other.history_ == fitted.history_


def test_clone_is_unfitted_with_same_params(fitted):
    other = clone(fitted)
    assert other.get_params() == fitted.get_params()
    assert not hasattr(other, "encoder_")


def test_saved_encoder_is_a_starting_point_for_training(fitted, shapes16, tmp_path):
    X, y = shapes16
    path = fitted.save_encoder(tmp_path / "enc.keras")
    assert (tmp_path / "enc.keras.fingerprints.json").is_file()
    tuned = _embedder(encoder=str(path), epochs=1, learning_rate=1e-3).fit(X, y)
    assert len(tuned.history_["loss"]) == 1  # it trained
    before, after = fitted.transform(X[:8]), tuned.transform(X[:8])
    assert 1e-6 < np.abs(before - after).max() < 0.5  # moved, but from the saved weights
    frozen = FrozenEmbedder(str(path)).fit(X)
    np.testing.assert_allclose(frozen.transform(X[:8]), before, atol=1e-6)


def test_training_config_collects_every_setting():
    est = _embedder(loss="batch_hard", warmup_epochs=0, patience=2, checkpoint_dir=None)
    config = est.training_config()
    assert (config.loss, config.warmup_epochs, config.patience) == ("batch_hard", 0, 2)
    assert config.random_state == 0 and config.epochs == 3


def test_collapse_is_recorded(shapes16):
    X, y = shapes16
    with pytest.warns(UserWarning, match="collapsed"):
        est = _embedder(encoder="collapsed_cnn", epochs=4, learning_rate=1e-9).fit(X, y)
    assert est.collapsed_ and est.history_["collapsed"][0] == 1.0


# ------------------------------------------------------------------ bad input
def test_bad_inputs(fitted, shapes16, tmp_path):
    X, y = shapes16
    with pytest.raises(ValueError, match=r"Found input variables with inconsistent numbers"):
        _embedder().fit(X, y[:-1])
    with pytest.raises(ValueError, match="X has images with 1 channels, but TripletEmbedder"
                       r" expects 3 \(input_shape=\(16, 16, 3\)\)"):
        fitted.transform(X[..., :1])
    with pytest.raises(ValueError, match=r"X has 10 features per row, but input_shape="
                       r"\(16, 16, 3\) needs 768"):
        _embedder().fit(np.zeros((20, 10)), np.repeat([0, 1], 10))
    with pytest.raises(ValueError, match="X has 768 features, but TripletEmbedder is expecting"):
        small = _embedder(input_shape=None).fit(X[:8, :4, :4, 0].reshape(8, 16), [0, 1] * 4)
        small.transform(X.reshape(len(X), -1))
    bad = X.astype(np.float32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"X must be finite, got 1 NaN or infinite value\(s\)"):
        _embedder().fit(bad, y)
    with pytest.raises(TypeError, match="got a single str 'folder'"):
        fitted.transform("folder")
    with pytest.raises(ValueError, match="input_shape must be .* got \\(16, 16\\)"):
        _embedder(input_shape=(16, 16)).fit(X, y)


def test_bad_labels(shapes16):
    X, y = shapes16
    with pytest.raises(ValueError, match="at least 2 classes"):
        _embedder().fit(X, np.zeros(len(X), dtype=int))
    y_single = y.copy()
    y_single[y_single == 4] = 3
    y_single[0] = 4  # class 4 keeps a single image: no positive pair for it
    with pytest.raises(ValueError, match=r"at least 2 images to form a positive pair; "
                       r"too few in class\(es\) \{4: 1\}"):
        _embedder().fit(X, y_single)
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None"):
        _embedder().fit(X)


def test_bad_parameters(shapes16, tmp_path):
    X, y = shapes16
    with pytest.raises(InvalidParameterError, match="The 'loss' parameter of TripletEmbedder"
                       " must be a str among .* Got 'hinge' instead"):
        _embedder(loss="hinge").fit(X, y)
    with pytest.raises(InvalidParameterError, match="The 'distance' parameter"):
        _embedder(distance="manhattan").fit(X, y)
    with pytest.raises(InvalidParameterError, match="The 'margin' parameter"):
        _embedder(margin=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="encoder must be one of .* or the path of an "
                       "existing .keras encoder to fine-tune, got 'vgg'"):
        _embedder(encoder="vgg").fit(X, y)
    fake = tmp_path / "model.keras"
    fake.write_text("not a model")
    with pytest.raises(ValueError, match="model.keras"):
        _embedder(encoder=str(fake)).fit(X, y)
    with pytest.raises(ValueError, match="missing.keras"):
        _embedder(encoder=str(tmp_path / "missing.keras")).fit(X, y)
    with pytest.raises(ValueError, match=r"X has 0 images; expected at least 1 image"):
        _embedder().fit(np.zeros((0, 16, 16, 3)), [])
