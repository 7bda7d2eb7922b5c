"""Open-set evaluation: can the pipeline tell images of classes it never saw?

Every fold hides a different subset of whole classes. The embedding part of the pipeline
is cloned and trained on a training share of the *known* classes only, the head is
wrapped in :class:`classifiers.OpenSetClassifier` (threshold calibrated on held-out known
images inside the training share), and the test set is the rest of the known images plus
every image of the hidden classes. A fold's encoder never sees a hidden class: with a
trainable embedder because it is trained on known images only, with a frozen (saved)
encoder it is checked through the encoder's training fingerprints, and the report warns
when the encoder did see hidden images.

The record, :class:`OpenSetReport`, with its Markdown and histogram, lives in
:mod:`pipelines._open_set_records`; this module runs the folds and fills it, and wraps a
fitted head for prediction (:func:`rejecting_head`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from classifiers.open_set import SCORES, OpenSetClassifier, acceptance_threshold
from embedder.checks import few
from pipelines.report.folds import LOG, run_folds
from pipelines.report.open_set_records import METRICS, OpenSetFold, OpenSetReport
from pipelines.text import jsonable

#: Share of each known class's images held out as the known test set of a fold.
KNOWN_TEST_FRACTION = 0.25
#: The true positive rate at which the FPR is reported (the OOD literature's FPR95).
FPR_AT_TPR = 0.95


def open_set_report(pipeline, X, y, *, unknown_classes=2, cv=3, target_tpr=0.95,  # noqa: PLR0913
                    score="knn_distance", random_state=0, n_jobs=None) -> OpenSetReport:
    """Evaluate open-set recognition with whole classes hidden from training.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        From :func:`pipelines.make_triplet_pipeline`: every step but the last makes the
        embeddings (cloned and fitted per fold on known-class images only); the last is
        the head (cloned and wrapped in :class:`classifiers.OpenSetClassifier`; an
        ``OpenSetClassifier`` head is unwrapped first).
    X : array-like
        Images (4-D array, 2-D flattened array, or 1-D array/list of image paths).
    y : array-like of shape (n,)
        Class labels.
    unknown_classes : int, default=2
        Classes hidden in each fold; at least 2 classes must stay known.
    cv : int, default=3
        Number of folds, each hiding a different class subset (disjoint subsets while the
        classes last, then new combinations).
    target_tpr : float in (0, 1], default=0.95
        Share of held-out known images the calibrated threshold accepts.
    score : {"knn_distance", "centroid", "max_proba"}, default="knn_distance"
        The open-set score (see :class:`classifiers.OpenSetClassifier`).
    random_state : int or None, default=0
        Seed of the hidden subsets, the known train/test split and the calibration split.
    n_jobs : int or None, default=None
        Folds run at once, on the same fold engine as :func:`cross_validate_report`
        (:func:`pipelines.report.folds.run_folds`: joblib, so a Dask backend spreads them
        over a cluster). Each fold's seed is drawn before any runs: the report does not
        depend on it.

    Returns
    -------
    OpenSetReport
        Per fold and mean +- std: AUROC of known vs unknown test images by score, FPR
        at 95% TPR (share of unknown images scored at or below the score that accepts
        95% of the known test images), open-set accuracy (an unknown image is right
        when rejected, a known one when accepted and correctly classified), closed-set
        accuracy, and the shares accepted/rejected at the calibrated threshold.
    """
    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) < 2:
        raise TypeError(
            "pipeline must be an sklearn Pipeline with an embedding step and a head step "
            f"(see pipelines.make_triplet_pipeline), got {type(pipeline).__name__}"
        )
    if score not in SCORES:
        raise ValueError(f"score must be one of {list(SCORES)}, got {score!r}")
    if isinstance(target_tpr, bool) or not isinstance(target_tpr, int | float) or not (
            0 < target_tpr <= 1):
        raise ValueError(f"target_tpr must be a float in (0, 1], got {target_tpr!r}")
    from embedder.checks import column_labels

    X = X if isinstance(X, np.ndarray) else np.asarray(X)
    y = column_labels(y)
    if len(y) != len(X):
        raise ValueError(f"y must have one label per image ({len(X)}), got {len(y)}")
    classes = np.unique(y)
    rng = np.random.default_rng(random_state)
    hidden_sets = hidden_class_folds(classes, unknown_classes, cv, rng)
    head = pipeline[-1]
    head = head.head if isinstance(head, OpenSetClassifier) else head
    open_head = OpenSetClassifier(head, open_set_score=score, target_tpr=target_tpr,
                                  random_state=random_state)
    tasks = [_OpenSetTask(k, len(hidden_sets), hidden, int(rng.integers(2**31)))
             for k, hidden in enumerate(hidden_sets)]
    outputs = run_folds(_run_fold, tasks, pipeline[:-1], open_head, X, y, n_jobs=n_jobs)
    folds = [o.record for o in outputs]
    scores = [o.scores for o in outputs]
    warns = [f"fold {o.index + 1}: the encoder was trained on "
             f"{o.record['encoder_saw_unknown']} images of the classes it hides "
             f"({', '.join(o.record['unknown_classes'])}), e.g. a frozen encoder trained "
             "on all classes: the scores are optimistic"
             for o in outputs if o.record["encoder_saw_unknown"]]
    for message in warns:
        warnings.warn(message, UserWarning, stacklevel=2)
    return OpenSetReport(
        score=score, target_tpr=float(target_tpr), unknown_label=open_head.unknown_label,
        classes=[str(c) for c in classes], n_samples=len(y),
        cv={"n_splits": len(folds), "unknown_classes": int(unknown_classes),
            "known_test_fraction": KNOWN_TEST_FRACTION, "random_state": random_state},
        folds=jsonable(folds),
        mean={m: float(np.mean([f[m] for f in folds])) for m in METRICS},
        std={m: float(np.std([f[m] for f in folds])) for m in METRICS},
        scores=jsonable(scores), embedder=outputs[-1].embedder, head=repr(head),
        warnings=warns, notes=_notes(folds),
    )


def hidden_class_folds(classes, unknown_classes, cv, rng) -> list[list]:
    """The class subsets hidden by the folds: ``cv`` different subsets of ``classes``.

    Parameters
    ----------
    classes : array-like
        The distinct class labels.
    unknown_classes : int
        Size of each subset; at least 2 classes must remain known.
    cv : int
        Number of subsets.
    rng : numpy.random.Generator
        Random generator of the class draws.

    Returns
    -------
    list of list
        Consecutive runs of a shuffled class order (disjoint while the classes last),
        then random subsets not drawn before.
    """
    classes = np.asarray(classes).tolist()
    n = len(classes)
    if isinstance(unknown_classes, bool) or not isinstance(unknown_classes, int) or not (
            1 <= unknown_classes <= n - 2):
        raise ValueError(
            f"unknown_classes must be an int from 1 to {n - 2} (the number of classes, "
            f"{n}, minus the 2 that must stay known), got {unknown_classes!r}")
    if isinstance(cv, bool) or not isinstance(cv, int) or cv < 1:
        raise ValueError(f"cv must be a positive int, got {cv!r}")
    if math.comb(n, unknown_classes) < cv:
        raise ValueError(
            f"cv must be at most {math.comb(n, unknown_classes)}, the number of different "
            f"sets of {unknown_classes} of the {n} classes, got {cv}")
    order = rng.permutation(n)
    subsets, seen = [], set()
    for k in range(cv):
        pick = order[[(k * unknown_classes + j) % n for j in range(unknown_classes)]]
        while frozenset(pick) in seen:  # the classes ran out: a new random combination
            pick = rng.choice(n, unknown_classes, replace=False)
        seen.add(frozenset(pick))
        subsets.append([classes[i] for i in sorted(pick)])
    return subsets


@dataclasses.dataclass(frozen=True)
class _OpenSetTask:
    index: int
    n_splits: int
    hidden: list
    seed: int


def _run_fold(task, embed_part, open_head, X, y):
    """Train on the known training share, score the known test share and the hidden."""
    hidden, seed = task.hidden, task.seed
    unknown = np.isin(y, hidden)
    known_idx = np.flatnonzero(~unknown)
    train, test_known = train_test_split(known_idx, test_size=KNOWN_TEST_FRACTION,
                                         stratify=y[known_idx], random_state=seed)
    test = np.concatenate([test_known, np.flatnonzero(unknown)])
    part = clone(embed_part)
    Z_train = part.fit_transform(X[train], y[train])
    Z_test = part.transform(X[test])
    model = clone(open_head).fit(Z_train, y[train])
    s = model.score_samples(Z_test)
    is_unknown = np.isin(y[test], hidden)
    known_s, unknown_s = s[~is_unknown], s[is_unknown]
    predicted = model.predict(Z_test).astype(object)
    truth = np.where(is_unknown, model.unknown_label, y[test].astype(object))
    embedder = part.steps[-1][1]
    fold = {
        "unknown_classes": [str(c) for c in hidden],
        "n_train": len(train), "n_known_test": len(test_known),
        "n_unknown_test": int(is_unknown.sum()), "threshold": model.threshold_,
        "encoder_saw_unknown": _seen_count(embedder, X[unknown]),
        "auroc": float(roc_auc_score(is_unknown, s)),
        "fpr_at_95_tpr": float(np.mean(unknown_s <= acceptance_threshold(known_s,
                                                                         FPR_AT_TPR))),
        "open_set_accuracy": float(np.mean(predicted == truth)),
        "closed_set_accuracy": float(np.mean(model.head_.predict(Z_test[~is_unknown])
                                             == y[test][~is_unknown])),
        "known_accepted": float(np.mean(known_s <= model.threshold_)),
        "unknown_rejected": float(np.mean(unknown_s > model.threshold_)),
    }
    fold_scores = {"known": np.round(known_s, 6), "unknown": np.round(unknown_s, 6),
                   "threshold": model.threshold_}
    LOG.info("[open-set fold %d/%d] AUROC %.3f, open-set accuracy %.3f", task.index + 1,
             task.n_splits, fold["auroc"], fold["open_set_accuracy"])
    return OpenSetFold(task.index, jsonable(fold), fold_scores, _settings(embedder))


def _seen_count(embedder, X_unknown):
    """How many hidden images the fold's encoder was trained on (None: not recorded)."""
    seen = getattr(embedder, "training_fingerprints_", None)
    if seen is None or len(seen) == 0:
        return None
    from embedder.data.fingerprints import image_fingerprints, overlap

    return overlap(seen, image_fingerprints(X_unknown))


def _notes(folds) -> list[str]:
    if any(f["encoder_saw_unknown"] is None for f in folds):
        return ["The embedder records no training fingerprints, so whether it saw the "
                "hidden classes could not be checked."]
    return ["Every fold's encoder was trained without the images of its hidden classes "
            "(checked through the encoder's training fingerprints)."
            if not any(f["encoder_saw_unknown"] for f in folds) else
            "Some folds' encoders saw hidden images: see the warnings."]


def _settings(embedder) -> dict:
    params = embedder.get_params(deep=False) if hasattr(embedder, "get_params") else {}
    return {"class": type(embedder).__name__, **jsonable(params)}



def rejecting_head(head, calibration=None, *, target_tpr=None, random_state=0):
    """An :class:`~classifiers.OpenSetClassifier` around a fitted head, for prediction.

    Parameters
    ----------
    head : classifier
        A fitted head, e.g. the last step of a loaded pipeline. An ``OpenSetClassifier``
        is used as it is when no ``calibration`` is given.
    calibration : tuple (Z, y) or None, default=None
        Embeddings and labels of known-class images (e.g. the training images). The
        fitted head is kept as it is (``sklearn.frozen.FrozenEstimator``); the
        open-set reference data and threshold come from these. Required unless ``head``
        is an ``OpenSetClassifier``.
    target_tpr : float in (0, 1] or None, default=None
        Share of held-out known embeddings to accept; None keeps the head's own (or 0.95).
        An ``OpenSetClassifier`` head is re-thresholded from its stored calibration
        scores, exactly as refitting it with this ``target_tpr`` would.
    random_state : int or None, default=0
        Seed of the calibration split.

    Returns
    -------
    OpenSetClassifier
        Fitted; not the same object as ``head``.
    """
    import copy

    from sklearn.frozen import FrozenEstimator

    is_open = isinstance(head, OpenSetClassifier)
    if calibration is None:
        if not is_open:
            raise ValueError(
                "calibration must be given (embeddings and labels of known-class images) "
                f"to reject unknown classes with a {type(head).__name__} head; only an "
                "OpenSetClassifier head brings its own calibration")
        tpr = head.target_tpr if target_tpr is None else target_tpr
        threshold = head.threshold_at(tpr)  # validates tpr
        rethresholded = copy.deepcopy(head).set_params(target_tpr=tpr)
        rethresholded.threshold_ = threshold
        return rethresholded
    params = head.get_params(deep=False) if is_open else {"random_state": random_state}
    params.pop("head", None)
    if target_tpr is not None:
        params["target_tpr"] = target_tpr
    inner = head.head_ if is_open else head
    Z, y = calibration
    _check_calibration_classes(np.asarray(y), getattr(inner, "classes_", None))
    return OpenSetClassifier(FrozenEstimator(inner), **params).fit(Z, y)


def _check_calibration_classes(y, head_classes):
    """Refuse calibration labels that miss known classes: their images would be rejected.

    The open-set reference data come from the calibration images only, so a known class
    without calibration images is far from all of it, and every image of it is unknown.
    """
    found = np.unique(y)
    if len(found) < 2:
        raise ValueError(
            f"calibration must hold images of at least 2 known classes, got {len(found)} "
            f"({few(found.tolist())}): images of every other class would be rejected"
        )
    if head_classes is None:
        return
    missing = np.setdiff1d(np.asarray(head_classes), found)
    if len(missing):
        raise ValueError(
            f"calibration lacks {len(missing)} of the head's {len(head_classes)} classes "
            f"({few(missing.tolist())}): their images would be rejected as unknown"
        )
