"""Text renderings of a typed :class:`pipelines.report.Report`: Markdown and a summary.

Kept apart from :mod:`pipelines.report` (the computation) so each module stays short. The
strict-JSON sanitiser and the Markdown table helper live in :mod:`pipelines._text`.
"""

from __future__ import annotations

import numpy as np

from pipelines.text import last_value, markdown_table, markdown_text

#: Head metrics of a report -> their names in tables.
METRIC_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
                 "f1_macro": "macro-F1"}
#: Retrieval scores of a report -> their names in tables.
RETRIEVAL_NAMES = {"precision_at_1": "P@1", "r_precision": "R-precision",
                    "map_at_r": "MAP@R", "knn_accuracy": "kNN accuracy"}
# Above this many classes a confusion matrix as a table is unreadable: the most confused
# pairs are listed instead.
MAX_MATRIX_CLASSES = 30
TOP_CONFUSED = 15
_LISTED_CLASSES = 20


def _pm(mean: dict, std: dict, key: str, fmt: str = ".3f") -> str:
    if mean.get(key) is None:
        return "n/a"
    return f"{mean[key]:{fmt}} ± {std[key]:{fmt}}"


def _class_list(classes: list) -> str:
    shown = ", ".join(markdown_text(c) for c in classes[:_LISTED_CLASSES])
    more = len(classes) - _LISTED_CLASSES
    return shown if more <= 0 else f"{shown} and {more} more"


def retrieval_label(key: str, k) -> str:
    """The name of a retrieval score; the kNN accuracy names its ``k``.

    Parameters
    ----------
    key : str
        A key of ``embedder.metrics.retrieval_scores``' result.
    k : int or None
        Neighbours of the kNN accuracy.

    Returns
    -------
    str
        E.g. ``"P@1"``, ``"kNN accuracy (k=2)"``.
    """
    label = RETRIEVAL_NAMES[key]
    return f"{label} (k={k})" if key == "knn_accuracy" and k else label


def report_markdown(rep, images: dict) -> str:
    """Markdown for a :class:`pipelines.report.Report`.

    Parameters
    ----------
    rep : pipelines.report.Report
        The report.
    images : dict
        Figure kind -> PNG path relative to the Markdown file.

    Returns
    -------
    str
    """
    out = _overview(rep) + _heads_section(rep) + _per_class_section(rep)
    out += _confusion_section(rep) + _retrieval_section(rep) + _encoder_section(rep)
    if images:
        out += ["## Figures", ""]
        for kind, path in images.items():
            out += [f"![{kind.replace('_', ' ')}]({path})", ""]
    return "\n".join(out)


def _overview(rep) -> list:
    emb = rep.embedder
    out = ["# Cross-validated report", "",
           f"- images: {rep.n_samples}, classes ({len(rep.classes)}): "
           + _class_list(rep.classes),
           f"- cross-validation: {rep.cv.n_splits} folds, `{rep.cv.splitter}`",
           f"- refit_encoder: `{rep.refit_encoder}`",
           f"- embedder: `{emb.class_name}` (encoder `{emb.params.get('encoder', '?')}`"
           + (", frozen)" if emb.frozen else ")"),
           f"- best head: **{rep.best_head}** — {rep.best_head_rule}", ""]
    for warning in rep.warnings:
        out += [f"> **Warning:** {warning}", ""]
    if rep.validation:
        out += [f"> **Validation:** {rep.validation}", ""]
    return out + [f"- {note}" for note in rep.notes] + [""]


def _heads_section(rep) -> list:
    names = list(rep.heads)
    rows = [[label] + [_pm(rep.heads[n].mean, rep.heads[n].std, key) for n in names]
            for key, label in METRIC_NAMES.items()]
    rows += [[f"head {key.replace('_', ' ')} (s per fold)"]
             + [_pm(rep.heads[n].mean, rep.heads[n].std, key, ".4f") for n in names]
             for key in ("fit_time", "predict_time")]
    out = ["## Heads side by side (mean ± std over folds)", "",
           markdown_table(["metric", *names], rows)]
    rows = [[n, METRIC_NAMES[k]] + [f"{v:.3f}" for v in rep.heads[n].folds[k]]
            for n in names for k in METRIC_NAMES]
    header = ["head", "metric"] + [f"fold {i + 1}" for i in range(rep.cv.n_splits)]
    return out + ["## Per fold", "", markdown_table(header, rows)]


def per_class_rows(rep) -> tuple[list, list]:
    """``(header, rows)`` of the per-class table: class, support, then one
    ``precision / recall / F1`` cell per head (pooled out-of-fold predictions)."""
    names = list(rep.heads)
    rows = []
    for cls in rep.classes:
        cells = []
        for n in names:
            c = rep.heads[n].classification_report.get(cls, {})
            cells.append(f"{c.get('precision', 0):.2f} / {c.get('recall', 0):.2f} / "
                         f"{c.get('f1-score', 0):.2f}")
        support = rep.heads[names[0]].classification_report.get(cls, {}).get("support", 0)
        rows.append([cls, int(support), *cells])
    return ["class", "support", *names], rows


def _per_class_section(rep) -> list:
    return ["## Per class (pooled out-of-fold predictions): precision / recall / F1", "",
            markdown_table(*per_class_rows(rep))]


def confused_pairs(matrix, classes: list, n: int = TOP_CONFUSED) -> list:
    """The ``n`` largest off-diagonal cells: ``(true, predicted, count, share of true)``.

    Ties are listed in the order of the classes (row, then column).

    Parameters
    ----------
    matrix : array-like of int, shape (n_classes, n_classes)
        Confusion matrix, rows = true class.
    classes : list of str
        Class names in the matrix's order.
    n : int, default=15
        How many pairs at most.

    Returns
    -------
    list of tuple
        ``(true name, predicted name, images, share of the true class's images)``, only
        cells with at least one image.
    """
    cm = np.asarray(matrix, dtype=np.int64)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:n]
    rows, cols = np.unravel_index(flat, off.shape)
    totals = cm.sum(axis=1)
    return [(classes[r], classes[c], int(off[r, c]), off[r, c] / max(totals[r], 1))
            for r, c in zip(rows, cols, strict=True) if off[r, c] > 0]


def _confusion_section(rep) -> list:
    cm = rep.heads[rep.best_head].confusion_matrix
    if len(rep.classes) <= MAX_MATRIX_CLASSES:
        return [f"## Confusion matrix of {rep.best_head} (summed over folds; rows: true, "
                "columns: predicted)", "",
                markdown_table(["true \\ pred", *rep.classes],
                               [[c, *r] for c, r in zip(rep.classes, cm, strict=True)])]
    pairs = confused_pairs(cm, rep.classes)
    out = [f"## Most confused classes of {rep.best_head} (summed over folds; "
           f"{len(rep.classes)} classes, too many for a table)", ""]
    if not pairs:
        return out + ["No image was misclassified.", ""]
    rows = [[t, p, count, f"{share:.1%}"] for t, p, count, share in pairs]
    return out + [markdown_table(["true", "predicted as", "images", "share of true class"],
                                 rows)]


def _retrieval_section(rep) -> list:
    ret = rep.retrieval
    rows = [[retrieval_label(key, ret.k), _pm(ret.mean, ret.std, key)]
            + [_fmt(f.get(key)) for f in ret.folds]
            for key in RETRIEVAL_NAMES if key in ret.mean]
    header = ["score", "mean ± std", *[f"fold {i + 1}" for i in range(len(ret.folds))]]
    return ["## Retrieval scores of the held-out embeddings (per fold, leave-one-out)", "",
            markdown_table(header, rows), ret.note, ""]


def _fmt(value, fmt: str = ".3f") -> str:
    return "n/a" if value is None else f"{value:{fmt}}"


def _encoder_section(rep) -> list:
    params = rep.embedder.params
    out = ["## Encoder", "",
           markdown_table(["setting", "value"], [[k, f"`{v}`"] for k, v in params.items()])]
    if rep.embedder.frozen:
        trained = [("encoder", rep.embedder.history, rep.embedder.validation, None)]
    else:
        trained = [(f"fold {f.index + 1}", f.history, f.validation, f.encoder_fit_time)
                   for f in rep.folds]
    rows = [[name, len(hist["loss"]), _last(hist, "loss"), _last(hist, "val_precision_at_1"),
             _last(hist, "val_map_at_r"), _validation_cell(val), _fmt(fit_time, ".1f")]
            for name, hist, val, fit_time in trained if hist.get("loss")]
    if not rows:
        return out + ["No encoder was trained during this evaluation.", ""]
    return out + [markdown_table(["trained", "epochs", "final loss", "final val P@1",
                                  "final val MAP@R", "validation split",
                                  "training time (s)"], rows)]


def _validation_cell(validation) -> str:
    if not validation:
        return "n/a"
    if validation.get("used"):
        return f"{validation.get('n_images', '?')} images"
    return "skipped"


def _last(hist: dict, key: str) -> str:
    return _fmt(last_value(hist, key), ".4f")


def report_summary(rep) -> str:
    """A plain-text table of the heads, the best head and the retrieval scores.

    Parameters
    ----------
    rep : pipelines.report.Report
        The report.

    Returns
    -------
    str
    """
    width = max(10, *(len(name) for name in rep.heads))
    lines = [f"{'head':<{width}} {'accuracy':>15} {'balanced acc':>15} {'macro-F1':>15} "
             f"{'fit s':>8} {'predict s':>9}"]
    for name, row in rep.heads.items():
        cells = [_pm(row.mean, row.std, m) for m in METRIC_NAMES]
        lines.append(f"{name:<{width}} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15} "
                     f"{row.mean['fit_time']:>8.3f} {row.mean['predict_time']:>9.3f}")
    lines.append(f"best head: {rep.best_head} (highest mean balanced accuracy)")
    ret = rep.retrieval
    scores = [f"{retrieval_label(key, ret.k)} {ret.mean[key]:.3f}"
              for key in RETRIEVAL_NAMES if ret.mean.get(key) is not None]
    if scores:
        lines.append("held-out retrieval: " + ", ".join(scores))
    lines.append(f"{rep.n_samples} images, {len(rep.classes)} classes, "
                 f"{rep.cv.n_splits} folds, refit_encoder={rep.refit_encoder}")
    if rep.validation:
        lines.append(f"note: {rep.validation}")
    lines += [f"WARNING: {w}" for w in rep.warnings]
    return "\n".join(lines)
