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
import logging
import sys
import time
from collections.abc import Mapping
from numbers import Integral

import joblib
import numpy as np
from sklearn.base import clone
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold

from pipelines.report.records import FoldRecord
from pipelines.text import jsonable, natural_key

METRICS = ("accuracy", "balanced_accuracy", "f1_macro")
TIMES = ("fit_time", "predict_time")
DEFAULT_KNN_K = 5
# Progress lines (one per fold); pipelines.report.report_progress shows them on a stream.
LOG = logging.getLogger("pipelines.report")
_SCORERS = {
    "accuracy": accuracy_score,
    "balanced_accuracy": balanced_accuracy_score,
    "f1_macro": lambda t, p: f1_score(t, p, average="macro", zero_division=0),
}


@dataclasses.dataclass(frozen=True)
class FoldTask:
    """Indices of one fold and whether to send its test embeddings back (2-D plot).

    ``started`` is when the evaluation began (``time.perf_counter()`` of the process that
    runs the folds one after another): the progress lines estimate the time left from it.
    """

    index: int
    train: np.ndarray
    test: np.ndarray
    n_splits: int
    keep_embeddings: bool
    started: float | None = None


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

    Parameters
    ----------
    module : str
        Dotted module name, e.g. ``"embedder.frozen"``.
    name : str
        Class name in that module.

    Returns
    -------
    type or tuple
        The class, or ``()``.
    """
    found = sys.modules.get(module)
    return getattr(found, name, ()) if found is not None else ()


def is_frozen_embedder(step) -> bool:
    """Whether ``step`` is an :class:`embedder.FrozenEmbedder` (trains nothing in ``fit``).

    Parameters
    ----------
    step : object
        The pipeline's embedding step.

    Returns
    -------
    bool
    """
    return isinstance(step, loaded_class("embedder.frozen", "FrozenEmbedder"))


#: The fitted ``TripletEmbedder`` attributes (without their ``_``) that say how its
#: training ended; :func:`validation_info` copies them into a fold's record.
STOP_FIELDS = ("stop_reason", "epochs_run", "epoch_kept")


def validation_info(step) -> dict | None:
    """A fitted :class:`embedder.TripletEmbedder`'s ``validation_`` as a plain dict.

    Parameters
    ----------
    step : object
        A fitted embedding step.

    Returns
    -------
    dict or None
        ``used``, ``reason``, ``n_images``, and how its training ended: ``stop_reason``,
        ``epochs_run``, ``epoch_kept`` (the estimator's attributes of those names, when
        it has them); ``None`` for other embedders (a frozen one trained nothing) or
        when ``validation_`` is missing.
    """
    if not isinstance(step, loaded_class("embedder.estimator", "TripletEmbedder")):
        return None
    info = getattr(step, "validation_", None)
    if not isinstance(info, Mapping):
        return None
    info = dict(info)
    for name in STOP_FIELDS:
        if hasattr(step, name + "_"):
            info[name] = getattr(step, name + "_")
    return jsonable(info)


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
    """A frozen encoder: every image embedded once, up front; folds slice the rows.

    The embeddings travel as ``run_fold``'s ``X`` argument, not inside this object, so
    joblib can memory-map (loky) or scatter (Dask) them once instead of per fold.
    """

    def embed(self, Z, y, task: FoldTask) -> FoldEmbedding:
        """The rows of the up-front embeddings ``Z`` that belong to the fold."""
        return FoldEmbedding(Z[task.train], Z[task.test])


def score_head(head, Z_train, y_train, Z_test, y_test) -> HeadFold:
    """Fit a clone of ``head`` on the training embeddings and score it on the test fold.

    Parameters
    ----------
    head : classifier
        Unfitted scikit-learn classifier (cloned, never changed).
    Z_train, y_train : ndarray
        Training embeddings and labels.
    Z_test, y_test : ndarray
        Test embeddings and labels.

    Returns
    -------
    HeadFold
        ``METRICS`` and ``TIMES`` scores, and the predictions.
    """
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
    """Leave-one-out retrieval scores of held-out embeddings; kNN accuracy only with ``k``.

    Parameters
    ----------
    Z : ndarray of shape (n, dim)
        Held-out embeddings.
    labels : ndarray of shape (n,)
        Their classes.
    k : int or None
        Neighbours voting in ``knn_accuracy``; ``None`` leaves it out.

    Returns
    -------
    dict
        ``precision_at_1``, ``r_precision``, ``map_at_r`` (``None`` when no class has
        two images), ``knn_accuracy`` (with ``k``) and ``n_queries``.
    """
    from embedder.metrics import retrieval_scores

    if np.unique(labels, return_counts=True)[1].max() < 2:
        # No image has a same-class neighbour: nothing to retrieve (retrieval_scores
        # would warn); the scores are undefined, and the report's note says why.
        return {"precision_at_1": None, "r_precision": None, "map_at_r": None,
                "n_queries": 0}
    scores = retrieval_scores(Z, labels, k=k or 1)
    if k is None:
        scores.pop("knn_accuracy")
    return {name: float(v) if name != "n_queries" else int(v) for name, v in scores.items()}


def run_folds(function, tasks, *args, n_jobs=None):
    """The one fold engine: ``[function(task, *args) for task in tasks]`` through joblib.

    Every report's folds run here, so ``n_jobs``, a :func:`joblib.parallel_config`
    backend (e.g. Dask's, as ``triplet evaluate --scheduler`` sets) and the progress lines
    of the ``"pipelines.report"`` logger apply to all of them alike.

    Parameters
    ----------
    function : callable
        One fold's work, ``function(task, *args)``; module-level, so that worker processes
        can import it.
    tasks : sequence
        One item per fold.
    *args
        Passed to every call (sent once per fold to worker processes).
    n_jobs : int or None, default=None
        Folds run at once (``None``: one, unless a :func:`joblib.parallel_config` says
        otherwise).

    Returns
    -------
    list
        The folds' results, in the order of ``tasks``.
    """
    return joblib.Parallel(n_jobs=n_jobs)(
        joblib.delayed(function)(task, *args) for task in tasks)


def run_fold(task: FoldTask, embedding, X, y, heads: list, knn_k):
    """Embed one fold, score every head and the held-out retrieval; see the module doc.

    Parameters
    ----------
    embedding : PerFoldEmbedding or FrozenEmbedding
        How the fold's embeddings are made.
    X : ndarray
        The images, or for a ``FrozenEmbedding`` the embeddings of all images.
    y : ndarray of shape (n,)
        All labels.
    task : FoldTask
        The fold's indices.
    heads : list of (str, estimator)
        Named unfitted heads.
    knn_k : int or None
        Neighbours of the held-out kNN accuracy; ``None`` leaves it out.

    Returns
    -------
    FoldOutput
    """
    if LOG.isEnabledFor(logging.INFO) and isinstance(embedding, PerFoldEmbedding):
        LOG.info("[fold %d/%d] training the encoder on %d images", task.index + 1,
                 task.n_splits, len(task.train))
    emb = embedding.embed(X, y, task)
    y_train, y_test = y[task.train], y[task.test]
    scored = {name: score_head(head, emb.Z_train, y_train, emb.Z_test, y_test)
              for name, head in heads}
    record = FoldRecord(task.index, len(task.train), len(task.test), emb.encoder_fit_time,
                        emb.embed_time, emb.history, emb.validation)
    if LOG.isEnabledFor(logging.INFO):
        text = ", ".join(f"{n} {h.scores['balanced_accuracy']:.3f}" for n, h in scored.items())
        LOG.info("[fold %d/%d] balanced accuracy: %s%s", task.index + 1, task.n_splits, text,
                 _progress_tail(task, emb.validation))
    return FoldOutput(record, retrieval(emb.Z_test, y_test, knn_k), scored, y_test,
                      np.asarray(emb.Z_test) if task.keep_embeddings else None)


def _progress_tail(task: FoldTask, validation) -> str:
    """How the fold's training ended and, when folds run in turn, the time left."""
    tail = ""
    if validation and validation.get("stop_reason"):
        tail += (f"; {validation.get('epochs_run')} epochs, kept epoch "
                 f"{validation.get('epoch_kept')} ({validation['stop_reason']})")
    if task.started is not None and task.index + 1 < task.n_splits:
        per_fold = (time.perf_counter() - task.started) / (task.index + 1)
        # the refit trains on all images: about one more fold's time
        left = per_fold * (task.n_splits - task.index - 1 + 1)
        tail += f"; about {left:.0f} s left (remaining folds and the refit)"
    return tail


def check_folds(cv, y, random_state):
    """``cv`` as a splitter; our error when a class has fewer images than folds.

    sklearn only warns (or fails with a message that names neither ``cv`` nor the
    class) when a class is smaller than the number of stratified folds; its test folds
    then lack that class.

    Parameters
    ----------
    cv : int or splitter
        Number of stratified, shuffled folds, or a scikit-learn splitter.
    y : ndarray of shape (n,)
        The labels.
    random_state : int or None
        Seed of the shuffling for an int ``cv``.

    Returns
    -------
    splitter
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

    Parameters
    ----------
    y : ndarray of shape (n,)
        The labels.
    splits : list of (train, test) index arrays
        The folds.
    default : int, default=5
        The largest ``k`` used.

    Returns
    -------
    tuple
        ``(k or None, note)``.
    """
    smallest = min(int(np.unique(y[test], return_counts=True)[1].min()) for _, test in splits)
    k = min(default, smallest - 1)
    if k < 1:
        return None, ("kNN accuracy is left out: a test fold holds a single image of some "
                      "class, so that image has no neighbour of its own class to find.")
    return k, (f"kNN accuracy: majority vote of the k={k} nearest held-out neighbours "
               f"(at most {default}, and at most the smallest held-out class, {smallest} "
               "images, minus one).")
