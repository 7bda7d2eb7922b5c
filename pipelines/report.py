"""Cross-validated reports that compare classification heads on triplet embeddings.

The folds come from scikit-learn (``StratifiedKFold(shuffle=True)`` or any splitter). With
``refit_encoder="per_fold"`` the embedding part of the pipeline is cloned and trained on the
training part of each fold only, so the encoder never sees the test fold; it is trained
once per fold and its embeddings are shared by all heads, which are cheap to fit. With
``"never"`` a frozen encoder embeds every image once and only the heads are
cross-validated; the report says so and warns when the encoder's training images (known
from their fingerprints) are among the evaluated ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
)
from sklearn.model_selection import StratifiedKFold, check_cv
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from pipelines._report_text import jsonable, report_markdown, report_summary
from pipelines.plots import project_2d

REFIT_ENCODER = ("per_fold", "never")
METRICS = ("accuracy", "balanced_accuracy", "f1_macro")
BEST_HEAD_RULE = (
    "highest mean balanced accuracy over the folds (ties: higher mean macro-F1, then the "
    "order of the heads)"
)
_SCORERS = {
    "accuracy": accuracy_score,
    "balanced_accuracy": balanced_accuracy_score,
    "f1_macro": lambda t, p: f1_score(t, p, average="macro", zero_division=0),
}


@dataclasses.dataclass
class Report:
    """Result of :func:`cross_validate_report`; every field is JSON-compatible.

    ``heads`` maps a head name to ``folds`` (metric -> per-fold list, incl. ``fit_time`` and
    ``predict_time`` in seconds), ``mean``, ``std``, ``classification_report`` (pooled
    out-of-fold predictions) and ``confusion_matrix`` (summed over folds, rows = true
    classes in the order of ``classes``).
    """

    heads: dict
    best_head: str
    best_head_rule: str
    classes: list
    n_samples: int
    cv: dict
    refit_encoder: str
    embedder: dict
    retrieval: dict
    timings: dict
    histories: list
    embedding_2d: dict
    warnings: list
    notes: list

    def to_dict(self) -> dict:
        """A deep copy of the report as plain dicts and lists."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The report as strict JSON (non-finite numbers become ``null``)."""
        return json.dumps(jsonable(self.to_dict()), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict) -> Report:
        """Rebuild a report from :meth:`to_dict` / parsed :meth:`to_json` output."""
        names = {f.name for f in dataclasses.fields(cls)}
        missing = names.difference(data)
        if missing:
            raise ValueError(f"report data lacks the fields {sorted(missing)}")
        return cls(**{k: data[k] for k in names})

    def to_markdown(self, images: dict | None = None) -> str:
        """A human-readable report; ``images`` maps figure names to relative PNG paths."""
        return report_markdown(self.to_dict(), images or {})

    def summary(self) -> str:
        """A one-screen plain-text table of the heads side by side."""
        return report_summary(self.to_dict())

    def save(self, directory) -> dict:
        """Write ``report.json``, ``report.md`` and the three PNG figures into ``directory``.

        Returns
        -------
        dict
            File kind (``"json"``, ``"markdown"``, ``"confusion_matrix"``,
            ``"embeddings_2d"``, ``"training_curves"``) -> written path.
        """
        from pipelines.plots import save_report_figures

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = save_report_figures(self.to_dict(), out)
        images = {k: Path(v).name for k, v in paths.items()}
        paths["json"] = _write_text(out / "report.json", self.to_json())
        paths["markdown"] = _write_text(out / "report.md", self.to_markdown(images))
        return paths


def _write_text(path: Path, text: str) -> str:
    # Temporary file + rename: an interrupted save never leaves a half-written report.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return str(path)


def cross_validate_report(
    pipeline: Pipeline,
    X,
    y,
    cv=5,
    heads: Sequence = ("knn", "logreg", "svm"),
    refit_encoder: str = "per_fold",
    random_state=0,
    *,
    verbose: int = 0,
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
    y : array-like of shape (n,)
        Class labels.
    cv : int or scikit-learn splitter, default=5
        An int means ``StratifiedKFold(cv, shuffle=True, random_state=random_state)``.
    heads : sequence of str or estimators, default=("knn", "logreg", "svm")
        Names for :func:`classifiers.make_head`, or unfitted scikit-learn classifiers.
    refit_encoder : {"per_fold", "never"}, default="per_fold"
        ``"per_fold"`` trains a clone of the embedder on each training fold (honest);
        ``"never"`` needs a frozen embedder (a ``.keras`` path encoder, or an already fitted
        embedder, used as is) and cross-validates only the heads.
    random_state : int or None, default=0
        Seed of the fold shuffling and of the 2-D projection's sample.
    verbose : int, default=0
        ``> 0`` prints one progress line per fold.

    Returns
    -------
    Report
    """
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
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(
            f"y must be 1-D with one label per image ({len(X)}), got shape {y.shape}"
        )
    if isinstance(cv, int | np.integer):
        cv = StratifiedKFold(int(cv), shuffle=True, random_state=random_state)
    splitter = check_cv(cv, y, classifier=True)
    splits = list(splitter.split(np.zeros((len(y), 1)), y))
    classes = np.unique(y)

    embed_part, embedder = pipeline[:-1], pipeline.steps[-2][1]
    warns, notes, histories = [], [], []
    timings = {"encoder_fit_time": [], "embed_time": []}
    if refit_encoder == "never":
        embed_part, embedder, fit_note = _frozen_part(embed_part, embedder, X, y)
        notes.append(fit_note)
        start = time.perf_counter()
        Z_all = embed_part.transform(X)
        timings["embed_time"].append(time.perf_counter() - start)
        histories.append(jsonable(getattr(embedder, "history_", {}) or {}))
        _check_leakage(embedder, X, warns, notes)
    else:
        notes.append("The encoder was trained inside every fold on the training part only "
                     "(refit_encoder='per_fold'): the test folds were never seen by it.")

    rows = {name: _empty_head_result(head) for name, head in named_heads}
    retrieval_folds, projection_source = [], None
    for k, (train, test) in enumerate(splits):
        if refit_encoder == "per_fold":
            if verbose:
                print(f"[fold {k + 1}/{len(splits)}] training the encoder on {len(train)} "
                      "images", flush=True)
            part = clone(embed_part)
            start = time.perf_counter()
            Z_train = part.fit_transform(X[train], y[train])
            timings["encoder_fit_time"].append(time.perf_counter() - start)
            start = time.perf_counter()
            Z_test = part.transform(X[test])
            timings["embed_time"].append(time.perf_counter() - start)
            fold_embedder = part.steps[-1][1]
            embedder = fold_embedder if k == 0 else embedder  # fitted: knows `frozen_`
            histories.append(jsonable(getattr(fold_embedder, "history_", {}) or {}))
            if k == 0 and getattr(fold_embedder, "frozen_", False):
                notes.append("The embedder is frozen (a saved encoder): refit_encoder="
                             "'per_fold' trained nothing inside the folds.")
                _check_leakage(fold_embedder, X, warns, notes)
        else:
            Z_train, Z_test = Z_all[train], Z_all[test]
        retrieval_folds.append(_retrieval(Z_test, y[test]))
        if projection_source is None:
            projection_source = (Z_all, y) if refit_encoder == "never" else (Z_test, y[test])
        for name, head in named_heads:
            _evaluate_head(rows[name], clone(head), Z_train, y[train], Z_test, y[test], classes)
        if verbose:
            scores = ", ".join(f"{n} {rows[n]['folds']['balanced_accuracy'][-1]:.3f}"
                               for n, _ in named_heads)
            print(f"[fold {k + 1}/{len(splits)}] balanced accuracy: {scores}", flush=True)

    names = [str(c) for c in classes]
    for row in rows.values():
        _finish_head_result(row, classes, names)
    best = max(rows, key=lambda n: (rows[n]["mean"]["balanced_accuracy"],
                                    rows[n]["mean"]["f1_macro"], -list(rows).index(n)))
    for message in warns:
        warnings.warn(message, UserWarning, stacklevel=2)
    return Report(
        heads=jsonable(rows), best_head=best, best_head_rule=BEST_HEAD_RULE, classes=names,
        n_samples=len(y),
        cv={"n_splits": len(splits), "splitter": repr(splitter), "random_state": random_state},
        refit_encoder=refit_encoder, embedder=_embedder_settings(embedder),
        retrieval=jsonable(_mean_std(retrieval_folds)), timings=jsonable(timings),
        histories=histories,
        embedding_2d=project_2d(
            *projection_source, random_state=random_state,
            source="all evaluated images, frozen encoder" if refit_encoder == "never"
            else "held-out images of fold 1, embedded by that fold's encoder"),
        warnings=warns, notes=notes,
    )


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


def _frozen_part(embed_part, embedder, X, y):
    """The embedding part to use as is for ``refit_encoder="never"``."""
    try:
        check_is_fitted(embedder)
        return embed_part, embedder, (
            "The encoder was NOT refitted inside the folds (refit_encoder='never'): an "
            "already fitted embedder was used as is; only the heads were cross-validated.")
    except (NotFittedError, TypeError):
        pass
    encoder = getattr(embedder, "encoder", None)
    if not (isinstance(encoder, str | os.PathLike) and str(encoder).endswith(".keras")):
        raise ValueError(
            "refit_encoder='never' needs a frozen embedder: a saved .keras encoder path or "
            f"an already fitted embedder, got an unfitted embedder with encoder={encoder!r}; "
            "use refit_encoder='per_fold' to train it inside the folds"
        )
    part = clone(embed_part).fit(X, y)  # a path encoder is frozen: fit trains nothing
    return part, part.steps[-1][1], (
        f"The encoder was NOT refitted inside the folds (refit_encoder='never'): the saved "
        f"encoder {str(encoder)!r} was used frozen; only the heads were cross-validated.")


def _check_leakage(embedder, X, warns: list, notes: list) -> None:
    from embedder.fingerprints import image_fingerprints, overlap

    seen = getattr(embedder, "training_fingerprints_", None)
    if seen is None or len(seen) == 0:
        notes.append("The encoder's training images are unknown (no fingerprints), so "
                     "overlap with the evaluated images could not be checked.")
        return
    n_overlap = overlap(seen, image_fingerprints(X))
    if n_overlap:
        warns.append(
            f"{n_overlap} of the {len(X)} evaluated images were in the encoder's training "
            "set (refit_encoder without per-fold training): the scores are optimistic; use "
            "refit_encoder='per_fold' or images the encoder never saw"
        )
    else:
        notes.append(f"None of the {len(X)} evaluated images is among the "
                     f"{len(seen)} images the encoder was trained on.")


def _empty_head_result(head) -> dict:
    keys = (*METRICS, "fit_time", "predict_time")
    return {"estimator": repr(head), "folds": {k: [] for k in keys},
            "_true": [], "_pred": [], "_cm": []}


def _evaluate_head(row, head, Z_train, y_train, Z_test, y_test, classes) -> None:
    start = time.perf_counter()
    head.fit(Z_train, y_train)
    row["folds"]["fit_time"].append(time.perf_counter() - start)
    start = time.perf_counter()
    pred = head.predict(Z_test)
    row["folds"]["predict_time"].append(time.perf_counter() - start)
    for metric, score in _SCORERS.items():
        row["folds"][metric].append(float(score(y_test, pred)))
    row["_true"].append(y_test)
    row["_pred"].append(pred)
    row["_cm"].append(confusion_matrix(y_test, pred, labels=classes))


def _finish_head_result(row, classes, names) -> None:
    y_true, y_pred = np.concatenate(row.pop("_true")), np.concatenate(row.pop("_pred"))
    row["confusion_matrix"] = np.sum(row.pop("_cm"), axis=0).tolist()
    row["classification_report"] = classification_report(
        y_true, y_pred, labels=classes, target_names=names, output_dict=True, zero_division=0
    )
    stats = _mean_std([dict(zip(row["folds"], v, strict=True))
                       for v in zip(*row["folds"].values(), strict=True)])
    row["mean"], row["std"] = stats["mean"], stats["std"]


def _mean_std(per_fold: list) -> dict:
    keys = per_fold[0].keys() if per_fold else ()
    return {"folds": per_fold,
            "mean": {k: float(np.mean([f[k] for f in per_fold])) for k in keys},
            "std": {k: float(np.std([f[k] for f in per_fold])) for k in keys}}


def _retrieval(Z, labels) -> dict:
    from embedder.metrics import retrieval_scores

    return {k: float(v) for k, v in retrieval_scores(Z, labels).items()}


def _embedder_settings(embedder) -> dict:
    params = embedder.get_params(deep=False) if hasattr(embedder, "get_params") else {}
    settings = {"class": type(embedder).__name__, **jsonable(params)}
    if hasattr(embedder, "frozen_"):
        settings["frozen"] = bool(embedder.frozen_)
    return settings
