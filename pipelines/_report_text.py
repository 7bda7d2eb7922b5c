"""Text renderings of a report dict: strict-JSON values, Markdown, and a plain-text summary.

Kept apart from :mod:`pipelines.report` (the computation) so each module stays short.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

_METRIC_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
                 "f1_macro": "macro-F1"}
_RETRIEVAL_NAMES = {"precision_at_1": "P@1", "r_precision": "R-precision",
                    "map_at_r": "MAP@R", "knn_accuracy": "kNN accuracy"}


def jsonable(obj):
    """``obj`` with NumPy values, tuples and odd keys turned into strict-JSON values.

    Non-finite floats become ``None``; objects JSON cannot hold become their ``repr``.
    """
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, np.str_):
        return str(obj)
    return repr(obj)


def _pm(stats: dict, key: str, fmt: str = ".3f") -> str:
    mean, std = stats["mean"].get(key), stats["std"].get(key)
    if mean is None:
        return "n/a"
    return f"{mean:{fmt}} ± {std:{fmt}}"


def _table(header: list, rows: list) -> list:
    lines = ["| " + " | ".join(map(str, header)) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return lines + [""]


def report_markdown(rep: dict, images: dict) -> str:
    """Markdown for a :meth:`pipelines.Report.to_dict` result."""
    heads, names = rep["heads"], list(rep["heads"])
    emb = rep["embedder"]
    out = ["# Cross-validated report", "",
           f"- images: {rep['n_samples']}, classes ({len(rep['classes'])}): "
           + ", ".join(rep["classes"]),
           f"- cross-validation: {rep['cv']['n_splits']} folds, `{rep['cv']['splitter']}`",
           f"- refit_encoder: `{rep['refit_encoder']}`",
           f"- embedder: `{emb.get('class')}` (encoder `{emb.get('encoder', '?')}`)",
           f"- best head: **{rep['best_head']}** — {rep['best_head_rule']}", ""]
    for warning in rep["warnings"]:
        out += [f"> **Warning:** {warning}", ""]
    out += [f"- {note}" for note in rep["notes"]] + [""]

    out += ["## Heads side by side (mean ± std over folds)", ""]
    rows = [[label] + [_pm(heads[n], key) for n in names]
            for key, label in _METRIC_NAMES.items()]
    rows += [[f"head {key.replace('_', ' ')} (s per fold)"]
             + [_pm(heads[n], key, ".4f") for n in names] for key in ("fit_time", "predict_time")]
    out += _table(["metric", *names], rows)

    out += ["## Per fold", ""]
    n_folds = rep["cv"]["n_splits"]
    rows = [[n, _METRIC_NAMES[k]] + [f"{v:.3f}" for v in heads[n]["folds"][k]]
            for n in names for k in _METRIC_NAMES]
    out += _table(["head", "metric"] + [f"fold {i + 1}" for i in range(n_folds)], rows)

    out += ["## Per class (pooled out-of-fold predictions): precision / recall / F1", ""]
    rows = []
    for cls in rep["classes"]:
        cells = []
        for n in names:
            c = heads[n]["classification_report"].get(cls, {})
            cells.append(f"{c.get('precision', 0):.2f} / {c.get('recall', 0):.2f} / "
                         f"{c.get('f1-score', 0):.2f}")
        support = heads[names[0]]["classification_report"].get(cls, {}).get("support", 0)
        rows.append([cls, int(support), *cells])
    out += _table(["class", "support", *names], rows)

    out += [f"## Confusion matrix of {rep['best_head']} (summed over folds; rows: true, "
            "columns: predicted)", ""]
    cm = heads[rep["best_head"]]["confusion_matrix"]
    out += _table(["true \\ pred", *rep["classes"]],
                  [[c, *r] for c, r in zip(rep["classes"], cm, strict=True)])

    ret = rep["retrieval"]
    out += ["## Retrieval scores of the held-out embeddings (per fold, leave-one-out)", ""]
    out += _table(["score", "mean ± std", *[f"fold {i + 1}" for i in range(n_folds)]],
                  [[label, _pm(ret, key)] + [f"{f[key]:.3f}" for f in ret["folds"]]
                   for key, label in _RETRIEVAL_NAMES.items() if key in ret["mean"]])

    out += ["## Encoder", ""]
    settings = {k: v for k, v in emb.items() if k != "class"}
    out += _table(["setting", "value"], [[k, f"`{v}`"] for k, v in settings.items()])
    fit_times = rep["timings"].get("encoder_fit_time") or []
    rows = []
    for i, hist in enumerate(rep["histories"]):
        if not hist.get("loss"):
            continue
        rows.append([f"fold {i + 1}" if rep["refit_encoder"] == "per_fold" else "encoder",
                     len(hist["loss"]), _last(hist, "loss"),
                     _last(hist, "val_precision_at_1"), _last(hist, "val_map_at_r"),
                     f"{fit_times[i]:.1f}" if i < len(fit_times) else "n/a"])
    if rows:
        out += _table(["trained", "epochs", "final loss", "final val P@1",
                       "final val MAP@R", "training time (s)"], rows)
    else:
        out += ["No encoder was trained during this evaluation.", ""]

    if images:
        out += ["## Figures", ""]
        for kind, path in images.items():
            out += [f"![{kind.replace('_', ' ')}]({path})", ""]
    return "\n".join(out)


def _last(hist: dict, key: str) -> str:
    values = hist.get(key) or []
    return "n/a" if not values or values[-1] is None else f"{values[-1]:.4f}"


def report_summary(rep: dict) -> str:
    """A plain-text table of the heads, the best head and the retrieval scores."""
    lines = [f"{'head':<10} {'accuracy':>15} {'balanced acc':>15} {'macro-F1':>15} "
             f"{'fit s':>8} {'predict s':>9}"]
    for name, row in rep["heads"].items():
        lines.append(
            f"{name:<10} {_pm(row, 'accuracy'):>15} {_pm(row, 'balanced_accuracy'):>15} "
            f"{_pm(row, 'f1_macro'):>15} {row['mean']['fit_time']:>8.3f} "
            f"{row['mean']['predict_time']:>9.3f}"
        )
    ret = rep["retrieval"]["mean"]
    lines.append(f"best head: {rep['best_head']} (highest mean balanced accuracy)")
    if ret:
        lines.append("held-out retrieval: " + ", ".join(
            f"{label} {ret[key]:.3f}" for key, label in _RETRIEVAL_NAMES.items() if key in ret))
    lines.append(f"{rep['n_samples']} images, {len(rep['classes'])} classes, "
                 f"{rep['cv']['n_splits']} folds, refit_encoder={rep['refit_encoder']}")
    lines += [f"WARNING: {w}" for w in rep["warnings"]]
    return "\n".join(lines)
