import pickle

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.preprocessing import normalize

from classifiers import make_head
from tests._helpers import run_without_tensorflow

pytest.importorskip("faiss")

from classifiers.ann import ANNKNeighborsClassifier, FaissKNeighborsTransformer  # noqa: E402


def _clustered(n=1200, n_classes=12, dim=16, noise=0.15, seed=0):
    rng = np.random.default_rng(seed)
    centres = normalize(rng.normal(size=(n_classes, dim)))
    y = rng.integers(0, n_classes, size=n)
    return normalize(centres[y] + noise * rng.normal(size=(n, dim))).astype(np.float32), y


def test_make_head_ann_defaults():
    head = make_head("knn", algorithm="ann")
    assert type(head) is ANNKNeighborsClassifier and is_classifier(head)
    assert (head.n_neighbors, head.weights, head.n_probe) == (5, "distance", 16)
    assert make_head("knn", algorithm="ann", n_neighbors=3, n_probe=2).n_neighbors == 3
    assert clone(head).get_params() == head.get_params()
    with pytest.raises(TypeError, match="unknown parameter 'metric' for head 'knn' with "
                                        "algorithm='ann'"):
        make_head("knn", algorithm="ann", metric="cosine")


def test_agrees_with_exact_knn():
    X, y = _clustered()
    Xq = _clustered(n=300, seed=1)[0]
    exact = make_head("knn").fit(X, y)
    ann = make_head("knn", algorithm="ann", n_lists=20, n_probe=5).fit(X, y)
    assert ann.transformer_.n_lists_ == 20
    agreement = np.mean(ann.predict(Xq) == exact.predict(Xq))
    assert agreement == pytest.approx(0.987, abs=0.005)  # 4 of 300 differ at 5 of 20 cells
    # probing every cell is an exhaustive search: the exact head's answers
    full = make_head("knn", algorithm="ann", n_lists=20, n_probe=20).fit(X, y)
    np.testing.assert_array_equal(full.predict(Xq), exact.predict(Xq))
    np.testing.assert_allclose(full.predict_proba(Xq), exact.predict_proba(Xq), atol=1e-5)


def test_small_gallery_uses_an_exact_index():
    X, y = _clustered(n=60)
    ann = make_head("knn", algorithm="ann").fit(X, y)
    assert ann.transformer_.n_lists_ == 1  # fewer than 2 x 39 images: flat index
    np.testing.assert_array_equal(ann.predict(X), make_head("knn").fit(X, y).predict(X))


def test_graph_rows_and_short_cells():
    X, _ = _clustered(n=400)
    # 10 cells of ~40 images, 1 probed, 150 neighbours asked: every row comes back short
    # (faiss pads with -1) and is searched again exhaustively: 150 true nearest neighbours.
    graph = FaissKNeighborsTransformer(150, n_lists=10, n_probe=1).fit(X).transform(X[:50])
    assert graph.shape == (50, 400) and graph.nnz == 50 * 150
    dense = np.linalg.norm(X[:50, None] - X[None], axis=2)
    expected = np.sort(dense, axis=1)[:, :150]
    got = graph.data.reshape(50, 150)
    np.testing.assert_allclose(got, expected, atol=1e-3)
    assert got[:, 0].max() < 1e-3  # each image is its own nearest neighbour, kept as 0


def test_n_neighbors_larger_than_gallery():
    X, y = _clustered(n=10)
    with pytest.raises(ValueError, match="n_neighbors must be between 1 and the 10 gallery "
                                         "images, got 11"):
        make_head("knn", algorithm="ann", n_neighbors=11).fit(X, y)


def test_pickle_loads_without_tensorflow(tmp_path):
    X, y = _clustered(n=400)
    head = make_head("knn", algorithm="ann", n_lists=5, n_probe=5).fit(X, y)
    path = tmp_path / "ann.pkl"
    path.write_bytes(pickle.dumps(head))
    np.save(tmp_path / "q.npy", X[:20])
    code = (
        "import pickle, numpy as np\n"
        f"head = pickle.loads(open({str(path)!r}, 'rb').read())\n"
        f"print(head.predict(np.load({str(tmp_path / 'q.npy')!r})).tolist())\n"
    )
    assert run_without_tensorflow(code) == str(head.predict(X[:20]).tolist())


def test_skops_round_trip_keeps_predictions(tmp_path):
    from pipelines import load_pipeline, save_pipeline

    X, y = _clustered(n=400)
    head = make_head("knn", algorithm="ann").fit(X, y)
    save_pipeline(head, tmp_path / "ann.skops")  # the index's sparse graph is allow-listed
    np.testing.assert_array_equal(load_pipeline(tmp_path / "ann.skops").predict(X),
                                  head.predict(X))
