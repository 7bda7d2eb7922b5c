"""The work of one cross-validation fold: embed, score every head, score retrieval.

One small class per refit mode makes a fold's embeddings (:class:`PerFoldEmbedding`
trains a clone of the embedding part on the training fold, :class:`FrozenEmbedding` slices
embeddings made once). :func:`run_fold` is the unit :class:`joblib.Parallel` ships to a
worker (a process, or a Dask worker under ``joblib.parallel_config(backend="dask")``): it
takes and returns only picklable values, and it is deterministic given the embedder's
``random_state``, so parallel folds give the sequential report.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Mapping
from numbers import Integral

import numpy as np
from sklearn.base import clone
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold

from pipelines._text import jsonable, natural_key

METRICS = ("accuracy", "balanced_accuracy", "f1_macro")
TIMES = ("fit_time", "predict_time")
DEFAULT_KNN_K = 5
_SCORERS = {
    "accuracy": accuracy_score,
    "balanced_accuracy": balanced_accuracy_score,
    "f1_macro": lambda t, p: f1_score(t, p, average="macro", zero_division=0),
}


@dataclasses.dataclass
class FoldRecord:
    """What happened to the encoder in one fold (a field of :class:`pipelines.Report`).

    Attributes
    ----------
    index : int
        0-based fold number.
    n_train, n_test : int
        Images in the training and the test part.
    encoder_fit_time, embed_time : float or None
        Seconds to train the fold's encoder and to embed its test images; ``None`` when
        the encoder was frozen (embedded once, see ``Report.embedder.embed_time``).
    history : dict
        The fold encoder's Keras history (name -> per-epoch list); ``{}`` when frozen.
    validation : dict or None
        The fold encoder's ``validation_`` (``used``, ``reason``, ``n_images``), or
        ``None`` when the embedder does not record one.
    """

    index: int
    n_train: int
    n_test: int
    encoder_fit_time: float | None
    embed_time: float | None
    history: dict
    validation: dict | None


@dataclasses.dataclass(frozen=True)
class FoldTask:
    """Indices of one fold and whether to send its test embeddings back (2-D plot)."""

    index: int
    train: np.ndarray
    test: np.ndarray
    n_splits: int
    keep_embeddings: bool


@dataclasses.dataclass
class HeadFold:
    """One head's scores (``METRICS`` and ``TIMES``) and predictions on one test fold."""

    scores: dict
    y_pred: np.ndarray


@dataclasses.dataclass
class FoldOutput:
    """Everything :func:`run_fold` sends back to the process that aggregates."""

    record: FoldRecord
    retrieval: dict
    heads: dict
    y_test: np.ndarray
    Z_test: np.ndarray | None


def loaded_class(module: str, name: str):
    """``module.name`` if that module is imported, else ``()`` (matches nothing).

    An object of a class exists only once the class's module is imported, so an
    ``isinstance`` test against ``()`` is exact, and a pipeline without a Keras embedder
    never pays for importing TensorFlow just to be told so.
    """
    found = sys.modules.get(module)
    return getattr(found, name, ()) if found is not None else ()


def is_frozen_embedder(step) -> bool:
    """Whether ``step`` is an :class:`embedder.FrozenEmbedder` (trains nothing in ``fit``)."""
    return isinstance(step, loaded_class("embedder.frozen", "FrozenEmbedder"))


def validation_info(step) -> dict | None:
    """A fitted :class:`embedder.TripletEmbedder`'s ``validation_`` as a plain dict."""
    if not isinstance(step, loaded_class("embedder.estimator", "TripletEmbedder")):
        return None
    info = getattr(step, "validation_", None)
    return jsonable(dict(info)) if isinstance(info, Mapping) else None


@dataclasses.dataclass
class FoldEmbedding:
    """The embeddings of one fold and how they were made."""

    Z_train: np.ndarray
    Z_test: np.ndarray
    encoder_fit_time: float | None = None
    embed_time: float | None = None
    history: dict = dataclasses.field(default_factory=dict)
    validation: dict | None = None


@dataclasses.dataclass(frozen=True)
class PerFoldEmbedding:
    """``refit_encoder="per_fold"``: a clone of the embedding part, trained on the fold."""

    embed_part: object
    needs_images = True

    def embed(self, X, y, task: FoldTask) -> FoldEmbedding:
        """Train a clone on ``X[task.train]`` and embed both parts of the fold."""
        part = clone(self.embed_part)
        start = time.perf_counter()
        Z_train = part.fit_transform(X[task.train], y[task.train])
        fit_time = time.perf_counter() - start
        start = time.perf_counter()
        Z_test = part.transform(X[task.test])
        step = part.steps[-1][1]
        return FoldEmbedding(Z_train, Z_test, fit_time, time.perf_counter() - start,
                             jsonable(getattr(step, "history_", None) or {}),
                             validation_info(step))


@dataclasses.dataclass(frozen=True)
class FrozenEmbedding:
    """A frozen encoder: every image embedded once, up front; folds slice the rows."""

    Z: np.ndarray
    needs_images = False

    def embed(self, X, y, task: FoldTask) -> FoldEmbedding:
        """The rows of the up-front embeddings that belong to the fold."""
        return FoldEmbedding(self.Z[task.train], self.Z[task.test])


def score_head(head, Z_train, y_train, Z_test, y_test) -> HeadFold:
    """Fit a clone of ``head`` on the training embeddings and score it on the test fold."""
    head = clone(head)
    start = time.perf_counter()
    head.fit(Z_train, y_train)
    fit_time = time.perf_counter() - start
    start = time.perf_counter()
    pred = head.predict(Z_test)
    scores = {"fit_time": fit_time, "predict_time": time.perf_counter() - start}
    scores.update({m: float(score(y_test, pred)) for m, score in _SCORERS.items()})
    return HeadFold(scores, np.asarray(pred))


def retrieval(Z, labels, k: int | None) -> dict:
    """Leave-one-out retrieval scores of held-out embeddings; kNN accuracy only with ``k``."""
    from embedder.metrics import retrieval_scores

    scores = retrieval_scores(Z, labels, k=k or 1)
    if k is None:
        scores.pop("knn_accuracy")
    return {name: float(v) if name != "n_queries" else int(v) for name, v in scores.items()}


def run_fold(embedding, X, y, task: FoldTask, heads: list, knn_k, verbose: int = 0):
    """Embed one fold, score every head and the held-out retrieval; see the module doc.

    Parameters
    ----------
    embedding : PerFoldEmbedding or FrozenEmbedding
        How the fold's embeddings are made.
    X : ndarray or None
        The images (``None`` when ``embedding`` does not need them).
    y : ndarray of shape (n,)
        All labels.
    task : FoldTask
        The fold's indices.
    heads : list of (str, estimator)
        Named unfitted heads.
    knn_k : int or None
        Neighbours of the held-out kNN accuracy; ``None`` leaves it out.
    verbose : int, default=0
        ``> 0`` prints one line per fold.

    Returns
    -------
    FoldOutput
    """
    emb = embedding.embed(X, y, task)
    y_train, y_test = y[task.train], y[task.test]
    scored = {name: score_head(head, emb.Z_train, y_train, emb.Z_test, y_test)
              for name, head in heads}
    record = FoldRecord(task.index, len(task.train), len(task.test), emb.encoder_fit_time,
                        emb.embed_time, emb.history, emb.validation)
    if verbose:
        text = ", ".join(f"{n} {h.scores['balanced_accuracy']:.3f}" for n, h in scored.items())
        print(f"[fold {task.index + 1}/{task.n_splits}] balanced accuracy: {text}",
              flush=True)
    return FoldOutput(record, retrieval(emb.Z_test, y_test, knn_k), scored, y_test,
                      np.asarray(emb.Z_test) if task.keep_embeddings else None)


def check_folds(cv, y, random_state):
    """``cv`` as a splitter; our error when a class has fewer images than folds.

    sklearn only warns (or fails with a message that names neither ``cv`` nor the
    class) when a class is smaller than the number of stratified folds; its test folds
    then lack that class.
    """
    if isinstance(cv, Integral) and not isinstance(cv, bool):
        if cv < 2:
            raise ValueError(f"cv must be at least 2 folds, got {cv}")
        cv = StratifiedKFold(int(cv), shuffle=True, random_state=random_state)
    if isinstance(cv, StratifiedKFold):
        _check_class_sizes(cv.n_splits, y)
    return cv


def _check_class_sizes(n_splits: int, y) -> None:
    from embedder.checks import few

    labels, counts = np.unique(y, return_counts=True)
    small = sorted(((int(c), natural_key(v), str(v)) for v, c in zip(labels, counts,
                                                                       strict=True)
                    if c < n_splits))
    if small:
        size, _, name = small[0]
        names = sorted((n for *_, n in small), key=natural_key)
        raise ValueError(
            f"cv={n_splits} folds need at least {n_splits} images in every class (each "
            f"test fold holds some of every class), but class {name!r} has {size}; "
            f"{len(small)} of {len(labels)} classes have fewer than {n_splits}: "
            f"{few(names)}. Use a smaller cv or more images per class"
        )


def choose_knn_k(y, splits, default: int = DEFAULT_KNN_K) -> tuple:
    """Neighbours for the held-out kNN accuracy and a sentence saying why.

    ``k`` is at most the smallest held-out class minus one, so a query's own class can
    fill every vote; ``None`` (kNN accuracy left out) when a held-out class has 1 image.
    """
    smallest = min(int(np.unique(y[test], return_counts=True)[1].min()) for _, test in splits)
    k = min(default, smallest - 1)
    if k < 1:
        return None, ("kNN accuracy is left out: a test fold holds a single image of some "
                      "class, so that image has no neighbour of its own class to find.")
    return k, (f"kNN accuracy: majority vote of the k={k} nearest held-out neighbours "
               f"(at most {default}, and at most the smallest held-out class, {smallest} "
               "images, minus one).")
