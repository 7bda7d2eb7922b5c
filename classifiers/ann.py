"""Approximate-neighbour kNN head for large galleries, on a faiss inverted-file index.

``make_head("knn", algorithm="ann")`` builds :class:`ANNKNeighborsClassifier`: a
:class:`FaissKNeighborsTransformer` (a scikit-learn ``KNeighborsTransformer``-style sparse
distance graph from faiss's ``IndexIVFFlat``) feeding scikit-learn's
``KNeighborsClassifier(metric="precomputed")``, which does the voting and
``predict_proba`` exactly as the exact head does.

Why faiss and not pynndescent: on this project's 2-core machines pynndescent's numba code
compiles on first use in every new process (measured 30 s import + 55-110 s for the
first fit of 2,000 points), longer than a whole test run; faiss-cpu ships compiled.
Why a wrapper and not ``Pipeline([transformer, classifier])``: a pipeline's ``fit`` calls
``fit_transform`` and so queries every gallery image against the gallery (a 1M-query
search at fit time) only to hand the classifier a graph it never reads; here the
classifier gets a trivial graph and only ``predict`` searches.

Nothing here imports TensorFlow; faiss is imported when an index is built or unpickled
(the ``ann`` extra: ``pip install faiss-cpu``). A saved head holds the indexed vectors,
not faiss's serialised index: faiss's reader trusts the sizes in its bytes (a 22 KB
``.skops`` file claimed 1.26 GiB), so loading rebuilds the index from checked vectors.
"""

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.validation import check_is_fitted, validate_data

# About sqrt(n) inverted lists (k-means cells), each with at least 39 points (faiss warns
# below), trained on 64 points per cell: faiss suggests 4-16 sqrt(n) cells and 256 points
# each, but k-means on that many costs minutes at 1M images on 2 cores, and sqrt(n) cells
# probed 16 at a time already agreed with exact kNN on >= 0.98 of the queries on
# clustered unit vectors (benchmarks/ann.py).
_MIN_POINTS_PER_LIST = 39
_TRAIN_POINTS_PER_LIST = 64


def _faiss():
    try:
        import faiss
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the approximate kNN head (algorithm='ann') needs faiss: "
                          "pip install 'triplet-embeddings[ann]' (faiss-cpu)") from error
    return faiss


class FaissKNeighborsTransformer(TransformerMixin, BaseEstimator):
    """Sparse k-nearest-neighbour distance graph from a faiss inverted-file index.

    Like :class:`sklearn.neighbors.KNeighborsTransformer` (``mode="distance"``): row i
    of ``transform(X)`` holds the Euclidean distances from ``X[i]`` to its (approximate)
    ``n_neighbors`` nearest fitted points, sorted, zeros stored explicitly.

    Parameters
    ----------
    n_neighbors : int, default=5
        Neighbours per query row.
    n_lists : int or None, default=None
        Inverted lists (k-means cells); None: about ``sqrt(n)``, and an exact flat
        index for galleries too small for two cells of 39 points.
    n_probe : int, default=16
        Cells searched per query; more is slower and closer to exact.
    random_state : int, default=0
        Seeds the sample the cells are trained on.

    Examples
    --------
    >>> X = np.eye(3, dtype="float32")
    >>> FaissKNeighborsTransformer(n_neighbors=1).fit(X).transform(X).toarray().tolist()
    [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    """

    def __init__(self, n_neighbors=5, *, n_lists=None, n_probe=16, random_state=0):
        self.n_neighbors = n_neighbors
        self.n_lists = n_lists
        self.n_probe = n_probe
        self.random_state = random_state

    def fit(self, X, y=None):
        """Build the index on ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings (or features), one row per sample.
        y : ignored
            Not used (an unsupervised transformer).

        Returns
        -------
        self
        """
        X = np.ascontiguousarray(validate_data(self, X, dtype=np.float32), np.float32)
        n = len(X)
        lists = self.n_lists or min(int(np.sqrt(n)), n // _MIN_POINTS_PER_LIST)
        self.n_lists_ = max(1, min(int(lists), n))
        self.index_ = self._build_index(X)
        self.n_samples_fit_ = n
        return self

    def _build_index(self, X):
        """The faiss index of ``X`` with ``n_lists_`` cells (deterministic: seeded)."""
        faiss = _faiss()
        n, dim = X.shape
        if self.n_lists_ == 1:
            index = faiss.IndexFlatL2(dim)
        else:
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, self.n_lists_)
            rng = np.random.default_rng(self.random_state)
            size = min(n, _TRAIN_POINTS_PER_LIST * self.n_lists_)
            index.train(X[np.sort(rng.choice(n, size, replace=False))])
        index.add(X)
        return index

    def transform(self, X):
        """Distances to the approximate nearest fitted points, as a CSR graph.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features)
            Embeddings (or features), one row per sample.

        Returns
        -------
        scipy.sparse.csr_matrix of shape (n_queries, n_samples_fit_)
        """
        check_is_fitted(self, "index_")
        X = np.ascontiguousarray(validate_data(self, X, dtype=np.float32, reset=False),
                                 np.float32)
        k = min(int(self.n_neighbors), self.n_samples_fit_)
        dist, ind = self._search(X, k, self.n_probe)
        short = np.flatnonzero((ind < 0).any(axis=1))
        if len(short):
            # Probed cells held fewer than k points: search those rows exhaustively.
            dist[short], ind[short] = self._search(X[short], k, self.n_lists_)
        data = np.sqrt(np.maximum(dist, 0.0)).ravel()
        indptr = np.arange(0, len(X) * k + 1, k)
        return sp.csr_matrix((data, ind.ravel(), indptr), shape=(len(X), self.n_samples_fit_))

    def _search(self, X, k, n_probe):
        if hasattr(self.index_, "nprobe"):
            self.index_.nprobe = int(min(n_probe, self.n_lists_))
        return self.index_.search(X, k)

    def __getstate__(self):
        # faiss indexes are SWIG objects: save the indexed vectors, rebuilt at load
        state = dict(super().__getstate__())  # object.__getstate__ is the live __dict__
        if "index_" in state:
            index = state.pop("index_")
            if hasattr(index, "make_direct_map"):  # IVF: vectors by id need the map
                index.make_direct_map()
            state["vectors_"] = index.reconstruct_n(0, index.ntotal)
        return state

    def __setstate__(self, state):
        state = dict(state)
        if "index_" in state:
            raise ValueError("FaissKNeighborsTransformer: this file holds a serialised "
                             "faiss index (an older format, unsafe to read); refit the head")
        vectors = state.pop("vectors_", None)
        super().__setstate__(state)
        if vectors is not None:
            self.index_ = self._build_index(self._checked_vectors(vectors))

    def _checked_vectors(self, vectors):
        """The saved vectors, if they agree with the saved sizes (else a ValueError)."""
        n = getattr(self, "n_samples_fit_", None)
        dim = getattr(self, "n_features_in_", None)
        lists = getattr(self, "n_lists_", None)
        ok = (isinstance(vectors, np.ndarray) and vectors.dtype == np.float32
              and vectors.ndim == 2 and vectors.shape == (n, dim)
              and isinstance(lists, int) and 1 <= lists <= max(n, 1))
        if not ok or not np.isfinite(vectors).all():
            got = (f"{type(vectors).__name__} {getattr(vectors, 'dtype', '')} "
                   f"{getattr(vectors, 'shape', '')}")
            raise ValueError(
                f"FaissKNeighborsTransformer: saved vectors must be finite float32 of shape "
                f"(n_samples_fit_, n_features_in_) = ({n}, {dim}) with 1 <= n_lists_ <= "
                f"n_samples_fit_ (got n_lists_={lists!r}); got {got}"
            )
        return np.ascontiguousarray(vectors)


class ANNKNeighborsClassifier(ClassifierMixin, BaseEstimator):
    """k-nearest-neighbour classifier on an approximate (faiss) neighbour index.

    Parameters
    ----------
    n_neighbors : int, default=5
        Neighbours that vote.
    weights : {"uniform", "distance"}, default="distance"
        As in :class:`~sklearn.neighbors.KNeighborsClassifier`.
    n_lists : int or None, default=None
        See :class:`FaissKNeighborsTransformer`.
    n_probe : int, default=16
        See :class:`FaissKNeighborsTransformer`.
    random_state : int, default=0
        See :class:`FaissKNeighborsTransformer`.

    Attributes
    ----------
    transformer_ : FaissKNeighborsTransformer
    classifier_ : KNeighborsClassifier
        With ``metric="precomputed"``.
    classes_ : ndarray

    Examples
    --------
    >>> X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> ANNKNeighborsClassifier(n_neighbors=1).fit(X, [0, 0, 1, 1]).predict(X).tolist()
    [0, 0, 1, 1]
    """

    def __init__(self, n_neighbors=5, *, weights="distance", n_lists=None, n_probe=16,
                 random_state=0):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.n_lists = n_lists
        self.n_probe = n_probe
        self.random_state = random_state

    def fit(self, X, y):
        """Index the gallery ``X`` with labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings (or features), one row per sample.
        y : array-like of shape (n_samples,)
            Class label of each gallery embedding.

        Returns
        -------
        self
        """
        X, y = validate_data(self, X, y, dtype=np.float32)
        if not 1 <= self.n_neighbors <= len(X):
            raise ValueError(f"n_neighbors must be between 1 and the {len(X)} gallery "
                             f"images, got {self.n_neighbors}")
        self.transformer_ = FaissKNeighborsTransformer(
            self.n_neighbors, n_lists=self.n_lists, n_probe=self.n_probe,
            random_state=self.random_state).fit(X)
        # The classifier reads only the query graphs of predict; it gets a trivial
        # self-graph here (see the module docstring).
        n = len(X)
        self_graph = sp.csr_matrix((np.zeros(n), np.arange(n), np.arange(n + 1)), shape=(n, n))
        self.classifier_ = KNeighborsClassifier(self.n_neighbors, weights=self.weights,
                                                metric="precomputed").fit(self_graph, y)
        self.classes_ = self.classifier_.classes_
        return self

    def predict(self, X):
        """Class of each row of ``X`` by a vote of its approximate neighbours.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features)
            Embeddings (or features), one row per sample.

        Returns
        -------
        ndarray of shape (n_queries,)
        """
        check_is_fitted(self, "classifier_")
        return self.classifier_.predict(self.transformer_.transform(X))

    def predict_proba(self, X):
        """Class probabilities: the (distance-weighted) shares of the neighbour votes.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features)
            Embeddings (or features), one row per sample.

        Returns
        -------
        ndarray of shape (n_queries, n_classes)
        """
        check_is_fitted(self, "classifier_")
        return self.classifier_.predict_proba(self.transformer_.transform(X))


_ANN_PARAMS = ("n_neighbors", "weights", "n_lists", "n_probe", "random_state")


def make_ann_head(**params):
    """``make_head("knn", algorithm="ann", ...)``: an unfitted ANNKNeighborsClassifier.

    Parameters
    ----------
    **params
        ``algorithm="ann"`` plus any of ``n_neighbors``, ``weights``, ``n_lists``,
        ``n_probe``, ``random_state``.

    Returns
    -------
    ANNKNeighborsClassifier

    Raises
    ------
    TypeError
        If a parameter is not one the ANN head takes.
    """
    params = {k: v for k, v in params.items() if k != "algorithm"}
    unknown = sorted(set(params) - set(_ANN_PARAMS))
    if unknown:
        raise TypeError(f"unknown parameter {unknown[0]!r} for head 'knn' with "
                        f"algorithm='ann' (ANNKNeighborsClassifier); valid parameters: "
                        f"{sorted(_ANN_PARAMS + ('algorithm',))}")
    return ANNKNeighborsClassifier(**params)
