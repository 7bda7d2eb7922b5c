"""The peer benchmark times the user's public call of issue 26, and nothing else."""

import numpy as np
import pytest

import embedder
from benchmarks import peer
from embedder.models import encoders


@pytest.fixture
def fitted_calls(monkeypatch):
    """A recording stand-in for TripletEmbedder: the parameters and the fitted X."""
    calls = []
    real = embedder.TripletEmbedder

    class Recording:
        def __init__(self, **params):
            self.params = params

        def fit(self, X, y):
            calls.append((self.params, X, y))
            self.history_ = {"loss": [0.1] * self.params["epochs"]}
            self.config_ = real(**self.params).training_config()
            self.collapsed_ = False
            return self

        def transform(self, X):
            return np.zeros((len(X), 2), np.float32)

    monkeypatch.setattr(embedder, "TripletEmbedder", Recording)
    monkeypatch.setattr(encoders, "ENCODERS", dict(encoders.ENCODERS))
    return calls


def test_user_call_is_issue_26s_call():
    assert peer.user_call(4, 0) == {
        "encoder": "peer_cnn", "input_shape": (28, 28, 1), "loss": "batch_all",
        "classes_per_batch": 5, "samples_per_class": 25, "epochs": 4,
        "validation_fraction": 0.0, "random_state": 0, "verbose": 2}
    # everything else is the library's default, e.g. the 128-d embedding of the network
    assert embedder.TripletEmbedder().embedding_dim == peer.EMBEDDING_DIM
    assert peer.SETTINGS["full"]["epochs"] == 4


def test_ours_fits_float32_arrays_with_exactly_the_user_call(fitted_calls):
    X = np.zeros((20, 28, 28, 1), np.uint8)
    y = np.repeat(np.arange(5), 4)
    _, _, sw, facts = peer.train_ours(X, y, X[:3], epochs=2, seed=7)
    (params, fitted, labels), = fitted_calls
    assert params == peer.user_call(2, 7)
    assert fitted.dtype == np.float32 and fitted.shape == X.shape
    assert facts["train_images_per_epoch"] == 20 and facts["validation_fraction"] == 0.0
    assert facts["epochs_run"] == 2 and sw.seconds >= 0
