"""``.skops`` files never reach faiss's index reader: the ANN head is rebuilt from vectors."""

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from classifiers.ann import FaissKNeighborsTransformer  # noqa: E402
from pipelines import load_pipeline, save_pipeline  # noqa: E402
from pipelines.persistence import SIGNING_KEY_ENV  # noqa: E402


def _clustered(n, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, dim)) * 4
    y = rng.integers(0, 4, n)
    return (centres[y] + rng.normal(size=(n, dim))).astype(np.float32), y


@pytest.mark.parametrize("n", [30, 400])  # a flat index, an inverted-file index
def test_skops_load_rebuilds_the_index_without_faiss_reader(tmp_path, monkeypatch, n):
    from classifiers import make_head

    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    X, y = _clustered(n)
    head = make_head("knn", algorithm="ann").fit(X, y)
    save_pipeline(head, tmp_path / "ann.skops")

    def refuse(*args):
        raise AssertionError("faiss.deserialize_index trusts sizes in the file's bytes")

    monkeypatch.setattr(faiss, "deserialize_index", refuse)
    loaded = load_pipeline(tmp_path / "ann.skops")
    np.testing.assert_array_equal(loaded.predict(X), head.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), head.predict_proba(X))


def _state(n=60):
    X, _ = _clustered(n)
    return FaissKNeighborsTransformer(n_neighbors=3).fit(X).__getstate__()


def _load(state):
    new = FaissKNeighborsTransformer.__new__(FaissKNeighborsTransformer)
    new.__setstate__(state)
    return new


@pytest.mark.parametrize("change", [
    {"vectors_": np.zeros((5, 8), np.float32)},  # fewer vectors than n_samples_fit_
    {"n_samples_fit_": 2**40},  # a size claimed by the file
    {"vectors_": np.zeros((60, 8), np.float64)},
    {"n_lists_": 10**9},
    {"vectors_": np.full((60, 8), np.nan, np.float32)},
])
def test_saved_sizes_are_checked_against_the_vectors(change):
    with pytest.raises(ValueError, match=r"^FaissKNeighborsTransformer: saved vectors must be "
                       r"finite float32 of shape \(n_samples_fit_, n_features_in_\)"):
        _load({**_state(), **change})


def test_a_serialised_faiss_index_is_refused():
    state = _state()
    state["index_"] = np.frombuffer(b"\0" * 64, np.uint8)
    with pytest.raises(ValueError, match=r"holds a serialised faiss index \(an older format, "
                       r"unsafe to read\); refit the head$"):
        _load(state)
    assert _load(_state()).transform(_clustered(4)[0]).shape == (4, 60)  # the genuine state
