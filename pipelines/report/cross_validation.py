"""Cross-validated reports that compare classification heads on triplet embeddings.

The folds come from scikit-learn (``StratifiedKFold(shuffle=True)`` or any splitter). With
``refit_encoder="per_fold"`` the embedding part of the pipeline is cloned and trained on the
training part of each fold only, so the encoder never sees the test fold; it is trained
once per fold and its embeddings are shared by all heads, which are cheap to fit. With
``"never"`` (or an :class:`embedder.FrozenEmbedder`) a frozen encoder embeds every image
once and only the heads are cross-validated; the report says so and warns when the
encoder's training images (known from their fingerprints) are among the evaluated ones.

Folds run through :class:`joblib.Parallel` (``n_jobs``), so
``with joblib.parallel_config(backend="dask"):`` spreads them over a Dask cluster.

The result is typed (fields as of this version; ``pipelines.plots``, the Markdown and the
CLI read them, ``to_dict``/``to_json`` are for output only):

- :class:`Report`: ``heads`` (name -> :class:`HeadResult`), ``best_head``,
  ``best_head_rule``, ``classes`` (list of str, natural order; the order of every
  confusion matrix), ``n_samples``, ``cv`` (:class:`CVInfo`), ``refit_encoder``,
  ``embedder`` (:class:`EmbedderInfo`), ``folds`` (list of :class:`FoldRecord`),
  ``retrieval`` (:class:`RetrievalResult`), ``embedding_2d`` (the dict of
  :func:`pipelines.plots.project_2d`), ``validation`` (str or None), ``warnings``,
  ``notes``; property ``histories`` (one Keras history per trained encoder).
- :class:`HeadResult`: ``estimator``, ``folds`` (metric -> per-fold list), ``mean``,
  ``std`` (metric -> float), ``confusion_matrix`` (list of lists of int, summed over the
  folds, rows = true class), ``classification_report`` (scikit-learn's dict of pooled
  out-of-fold predictions). Metrics: ``accuracy``, ``balanced_accuracy``, ``f1_macro``,
  ``fit_time``, ``predict_time`` (seconds).
- :class:`RetrievalResult`: ``folds`` (per-fold dicts), ``mean``, ``std``, ``k``
  (neighbours of ``knn_accuracy``, ``None`` when it is left out), ``note``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import classification_report, confusion_matrix
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from pipelines.report.folds import (
    LOG,
    METRICS,
    TIMES,
    FoldTask,
    FrozenEmbedding,
    PerFoldEmbedding,
    check_folds,
    choose_knn_k,
    is_frozen_embedder,
    run_fold,
    run_folds,
    validation_info,
)
from pipelines.report.records import (
    CVInfo,
    EmbedderInfo,
    HeadResult,
    Report,
    RetrievalResult,
)
from pipelines.text import jsonable, natural_key

REFIT_ENCODER = ("per_fold", "never")
BEST_HEAD_RULE = (
    "highest mean balanced accuracy over the folds (ties: higher mean macro-F1, then the "
    "order of the heads)"
)
_PER_FOLD_NOTE = ("The encoder was trained inside every fold on the training part only "
                  "(refit_encoder='per_fold'): the test folds were never seen by it.")




def cross_validate_report(
    pipeline: Pipeline,
    X,
    y,
    cv=5,
    heads: Sequence = ("knn", "logreg", "svm"),
    refit_encoder: str = "per_fold",
    random_state=0,
    *,
    n_jobs=None,
) -> Report:
    """Cross-validate several classification heads on the pipeline's embeddings.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        A pipeline from :func:`pipelines.make_triplet_pipeline`: every step but the last
        (normally ``"embed"``, a :class:`embedder.TripletEmbedder`) makes the embeddings;
        the last step (``"head"``) is replaced by each of ``heads``.
    X : array-like
        Images (4-D array, 2-D flattened array, or 1-D array/list of image paths).
    y : array-like of shape (n,) or (n, 1)
        Class labels.
    cv : int or scikit-learn splitter, default=5
        An int means ``StratifiedKFold(cv, shuffle=True, random_state=random_state)``;
        every class needs at least that many images.
    heads : sequence of str or estimators, default=("knn", "logreg", "svm")
        Names for :func:`classifiers.make_head`, or unfitted scikit-learn classifiers.
    refit_encoder : {"per_fold", "never"}, default="per_fold"
        ``"per_fold"`` trains a clone of the embedder on each training fold (honest);
        ``"never"`` needs a frozen embedder (an :class:`embedder.FrozenEmbedder`, or an
        already fitted embedder, used as is) and cross-validates only the heads. A
        ``FrozenEmbedder`` is never trained, whatever this says.
    random_state : int or None, default=0
        Seed of the fold shuffling and of the 2-D projection's sample.
    n_jobs : int or None, default=None
        Folds run at once, through :class:`joblib.Parallel` (``None``: one, unless a
        :func:`joblib.parallel_config` says otherwise, e.g. ``backend="dask"``). Each
        fold is deterministic given the embedder's ``random_state``, so the report
        does not depend on it.

    Returns
    -------
    Report

    Notes
    -----
    One progress line per fold goes to the ``"pipelines.report"`` logger at level INFO;
    :func:`report_progress` shows them on a stream.
    """
    named_heads, X, y = _check_inputs(pipeline, X, y, heads, refit_encoder)
    splitter = check_folds(cv, y, random_state)
    splits = list(splitter.split(np.zeros((len(y), 1)), y))
    labels = sorted(np.unique(y).tolist(), key=natural_key)
    embedding, data, info, warns, notes = _prepare_embedding(pipeline, X, y, refit_encoder)
    knn_k, knn_note = choose_knn_k(y, splits)
    started = time.perf_counter() if n_jobs in (None, 1) else None
    tasks = [FoldTask(i, train, test, len(splits), keep_embeddings=i == 0, started=started)
             for i, (train, test) in enumerate(splits)]
    outputs = run_folds(run_fold, tasks, embedding, data, y, named_heads, knn_k,
                        n_jobs=n_jobs)
    results = {name: _aggregate_head(head, [o.heads[name] for o in outputs],
                                     [o.y_test for o in outputs], labels)
               for name, head in named_heads}
    folds = [o.record for o in outputs]
    stops = _stop_note([f.validation for f in folds])
    if stops:
        notes = [*notes, stops]
    for message in warns:
        warnings.warn(message, UserWarning, stacklevel=2)
    return Report(
        heads=results, best_head=_best_head(results), best_head_rule=BEST_HEAD_RULE,
        classes=[str(c) for c in labels], n_samples=len(y),
        cv=CVInfo(len(splits), repr(splitter), random_state, n_jobs),
        refit_encoder=refit_encoder, embedder=info, folds=folds,
        retrieval=_aggregate_retrieval([o.retrieval for o in outputs], knn_k, knn_note),
        embedding_2d=_projection(data if info.frozen else None, outputs[0], y, random_state),
        validation=_validation_note([f.validation for f in folds] if not info.frozen
                                    else [info.validation], per_fold=not info.frozen),
        warnings=warns, notes=notes,
    )


@contextlib.contextmanager
def report_progress(stream=None):
    """Show :func:`cross_validate_report`'s per-fold progress lines on ``stream``.

    Parameters
    ----------
    stream : file-like or None, default=None
        Where the lines go; None means ``sys.stdout``.

    Examples
    --------
    >>> with report_progress():  # doctest: +SKIP
    ...     report = cross_validate_report(pipeline, X, y)
    [fold 1/5] balanced accuracy: knn 0.950, logreg 0.975, svm 0.975
    """
    handler = logging.StreamHandler(stream or sys.stdout)
    level = LOG.level
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    try:
        yield
    finally:
        LOG.removeHandler(handler)
        LOG.setLevel(level)


def _check_inputs(pipeline, X, y, heads, refit_encoder):
    from embedder.checks import column_labels

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) < 2:
        raise TypeError(
            "pipeline must be an sklearn Pipeline with an embedding step and a head step "
            f"(see pipelines.make_triplet_pipeline), got {type(pipeline).__name__}"
        )
    if refit_encoder not in REFIT_ENCODER:
        raise ValueError(
            f"refit_encoder must be one of {list(REFIT_ENCODER)}, got {refit_encoder!r}"
        )
    named_heads = _resolve_heads(heads)
    X = X if isinstance(X, np.ndarray) else np.asarray(X)
    y = column_labels(y)
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(
            f"y must be 1-D with one label per image ({len(X)}), got shape {y.shape}"
        )
    return named_heads, X, y


def _resolve_heads(heads) -> list:
    if isinstance(heads, str) or not isinstance(heads, Sequence) or len(heads) == 0:
        raise ValueError(f"heads must be a non-empty sequence of head names or classifiers, "
                         f"got {heads!r}")
    named = []
    for head in heads:
        if isinstance(head, str):
            from classifiers import HEADS, make_head

            if head not in HEADS:
                raise ValueError(f"heads must be names in {sorted(HEADS)} or sklearn "
                                 f"classifiers, got {head!r}")
            name, est = head, make_head(head)
        elif hasattr(head, "fit") and hasattr(head, "predict"):
            name, est = type(head).__name__, head
        else:
            raise TypeError(f"heads must contain head names or sklearn classifiers, got "
                            f"{type(head).__name__}")
        taken = {n for n, _ in named}
        base, i = name, 2
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        named.append((name, est))
    return named


def _prepare_embedding(pipeline, X, y, refit_encoder):
    """The fold-embedding implementation, what it embeds from (the images, or the frozen
    encoder's embeddings of all of them), the embedder's record, warnings and notes."""
    embed_part, step = pipeline[:-1], pipeline.steps[-2][1]
    if refit_encoder == "per_fold" and not is_frozen_embedder(step):
        params = jsonable(step.get_params(deep=False)) if hasattr(step, "get_params") else {}
        info = EmbedderInfo(type(step).__name__, params, False, {}, None, None)
        return PerFoldEmbedding(embed_part), X, info, [], [_PER_FOLD_NOTE]
    part, note = _frozen_part(embed_part, step, X, y, refit_encoder)
    start = time.perf_counter()
    Z = np.asarray(part.transform(X))
    embed_time = time.perf_counter() - start
    fitted = part.steps[-1][1]
    warns, notes = _check_leakage(fitted, X)
    params = jsonable(fitted.get_params(deep=False)) if hasattr(fitted, "get_params") else {}
    info = EmbedderInfo(type(fitted).__name__, params, True,
                        jsonable(getattr(fitted, "history_", None) or {}),
                        validation_info(fitted), embed_time)
    return FrozenEmbedding(), Z, info, warns, [note, *notes]


def _frozen_part(embed_part, step, X, y, refit_encoder):
    """The embedding part to use as is, and the note that says how it was obtained."""
    try:
        check_is_fitted(step)
        return embed_part, (
            f"The encoder was NOT refitted inside the folds (refit_encoder="
            f"'{refit_encoder}'): an already fitted {type(step).__name__} was used as is; "
            "only the heads were cross-validated.")
    except (NotFittedError, TypeError):
        pass
    if not is_frozen_embedder(step):
        raise ValueError(
            "refit_encoder='never' needs a frozen embedder (an embedder.FrozenEmbedder or "
            f"an already fitted embedder), got an unfitted {type(step).__name__}; use "
            "refit_encoder='per_fold' to train it inside the folds"
        )
    part = clone(embed_part).fit(X, y)  # a FrozenEmbedder's fit trains nothing
    return part, (
        f"The encoder was NOT refitted inside the folds (refit_encoder='{refit_encoder}'): "
        f"the saved encoder {str(step.encoder)!r} was used frozen (FrozenEmbedder); only "
        "the heads were cross-validated.")


def _check_leakage(embedder, X) -> tuple:
    from embedder.data.fingerprints import image_fingerprints, overlap

    seen = getattr(embedder, "training_fingerprints_", None)
    if seen is None or len(seen) == 0:
        return [], ["The encoder's training images are unknown (no fingerprints), so "
                    "overlap with the evaluated images could not be checked."]
    n_overlap = overlap(seen, image_fingerprints(X))
    if n_overlap:
        return [
            f"{n_overlap} of the {len(X)} evaluated images were in the encoder's training "
            "set (a frozen encoder, not trained per fold): the scores are optimistic; use "
            "refit_encoder='per_fold' or images the encoder never saw"
        ], []
    return [], [f"None of the {len(X)} evaluated images is among the {len(seen)} images "
                "the encoder was trained on."]


def _aggregate_head(head, folds: list, y_tests: list, labels: list) -> HeadResult:
    """Per-fold lists, mean and std, summed confusion matrix, pooled per-class report."""
    per_metric = {m: [f.scores[m] for f in folds] for m in (*METRICS, *TIMES)}
    y_true, y_pred = np.concatenate(y_tests), np.concatenate([f.y_pred for f in folds])
    matrix = sum(confusion_matrix(t, f.y_pred, labels=labels)
                 for t, f in zip(y_tests, folds, strict=True))
    per_class = classification_report(y_true, y_pred, labels=labels,
                                      target_names=[str(c) for c in labels],
                                      output_dict=True, zero_division=0)
    return HeadResult(
        estimator=repr(head), folds=jsonable(per_metric),
        mean={m: float(np.mean(v)) for m, v in per_metric.items()},
        std={m: float(np.std(v)) for m, v in per_metric.items()},
        confusion_matrix=np.asarray(matrix).tolist(), classification_report=jsonable(per_class))


def _best_head(results: dict) -> str:
    order = list(results)
    return max(order, key=lambda n: (results[n].mean["balanced_accuracy"],
                                     results[n].mean["f1_macro"], -order.index(n)))


def _aggregate_retrieval(per_fold: list, k, note: str) -> RetrievalResult:
    """Mean and std of each score over the folds where it is defined (``None`` if none)."""
    mean, std = {}, {}
    for key in (key for key in per_fold[0] if key != "n_queries"):
        defined = [f[key] for f in per_fold if f[key] is not None and np.isfinite(f[key])]
        mean[key] = float(np.mean(defined)) if defined else None
        std[key] = float(np.std(defined)) if defined else None
    return RetrievalResult(folds=jsonable(per_fold), mean=mean, std=std, k=k, note=note)


def _projection(Z_all, first, y, random_state) -> dict:
    from pipelines.plots import project_2d

    if Z_all is not None:
        return project_2d(Z_all, y, random_state=random_state,
                          source="all evaluated images, frozen encoder")
    return project_2d(first.Z_test, first.y_test, random_state=random_state,
                      source="held-out images of fold 1, embedded by that fold's encoder")


def _validation_note(validations: list, *, per_fold: bool) -> str | None:
    """One sentence: where the validation split was skipped, why, and what it means."""
    from embedder.checks import few

    skipped = [v for v in validations if v and not v.get("used", True)]
    if not skipped:
        return None
    reasons = list(dict.fromkeys(str(v.get("reason") or "no reason given") for v in skipped))
    if not per_fold:
        where = "for the encoder"
    elif len(skipped) == len(validations):
        where = f"in all {len(validations)} folds" if len(validations) > 1 else ""
    else:
        where = f"in {len(skipped)} of {len(validations)} folds"
    why = reasons[0] if len(reasons) == 1 else few(reasons, n=2)
    return (f"Validation was skipped{' ' + where if where else ''} ({why}): without a "
            "validation split there was no early stopping and no restore of the best "
            "weights; the encoder of the last epoch was kept.")


def _stop_note(validations: list) -> str | None:
    """One sentence: how each fold's training ended (epochs run, epoch kept, why)."""
    parts = [f"fold {i + 1}: {v['epochs_run']} epochs, kept epoch {v['epoch_kept']} "
             f"({v['stop_reason']})"
             for i, v in enumerate(validations) if v and v.get("stop_reason")]
    return "Training stopped - " + "; ".join(parts) + "." if parts else None


def refit_plan(report) -> dict | None:
    """How to refit the encoder on all images: the epochs the folds chose, no split.

    The folds' early stopping picked an epoch on a validation split of each fold's
    training part; the refit trains for the median of those epochs (rounded up) on all
    images, holding none out, so that no user image is spent on a split the refit does
    not check.

    Parameters
    ----------
    report : Report
        A cross-validated report whose folds trained an encoder (``refit_encoder=
        "per_fold"``).

    Returns
    -------
    dict or None
        ``epochs`` (int), ``params`` (the ``TripletEmbedder`` parameters to set:
        ``epochs`` and ``validation_fraction=0.0``) and ``note`` (what the refit does,
        for the report); None when no fold recorded the epoch it kept.
    """
    kept = [v["epoch_kept"] for v in (f.validation for f in report.folds)
            if v and v.get("epoch_kept")]
    if not kept:
        return None
    epochs = int(np.ceil(np.median(kept)))
    note = (f"Refit: the saved model's encoder was trained on all {report.n_samples} images "
            f"for {epochs} epochs, the median of the epochs the folds kept "
            f"({', '.join(str(k) for k in kept)}), without a validation split.")
    return {"epochs": epochs, "params": {"epochs": epochs, "validation_fraction": 0.0},
            "note": note}
