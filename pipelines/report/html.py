"""One self-contained HTML page per report: tables, figures as data URIs, no outside files.

:func:`report_html` renders a :class:`pipelines.report.Report`, :func:`open_set_html` an
:class:`pipelines.report.OpenSetReport`. The page needs nothing but itself: the CSS is
inline and every figure is a base64 PNG ``data:`` URI, so ``report.html`` can be mailed,
attached to a ticket or opened from an artifact store. Every piece of text that comes from
the user or the data (class names, settings, warnings) goes through :func:`html.escape`.

Readable from 2 to 1,000 classes: tables longer than a screen scroll inside their own box,
tables longer than :data:`MAX_TABLE_ROWS` rows show the first rows and say how many were
left out (``report.json`` has them all), the confusion matrix is a table only up to
:data:`pipelines.report.markdown.MAX_MATRIX_CLASSES` classes and the most confused pairs
above.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from pipelines.report.markdown import (
    MAX_MATRIX_CLASSES,
    METRIC_NAMES,
    RETRIEVAL_NAMES,
    confused_pairs,
    per_class_rows,
    retrieval_label,
)
from pipelines.text import last_value

#: Rows of one table at most; the rest is counted in a line under the table.
MAX_TABLE_ROWS = 250
# Figure kinds of ``save_report_figures`` -> headings, in the order of the page.
_FIGURE_TITLES = {"confusion_matrix": "Confusion matrix",
                  "embeddings_2d": "Embeddings in 2-D",
                  "training_curves": "Training curves"}
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;
max-width:1100px;padding:0 1em;color:#1a1a1a;background:#fff;line-height:1.4}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
.scroll{max-height:32em;overflow:auto;border:1px solid #ddd;margin:.5em 0;width:fit-content;
max-width:100%}
table{border-collapse:collapse;font-size:.9em}
th,td{border:1px solid #ddd;padding:.2em .5em;text-align:right;white-space:nowrap}
th{background:#f3f3f3;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
.warn{background:#fff4e5;border-left:4px solid #f0a030;padding:.4em .8em;margin:.4em 0}
.note{color:#555}.more{color:#555;font-style:italic}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
code{background:#f5f5f5;padding:0 .2em}.text td,.text th{text-align:left;white-space:normal}
"""


def esc(value) -> str:
    """``value`` as text that HTML shows literally (``<``, ``>``, ``&`` and quotes escaped).

    Parameters
    ----------
    value : object
        Anything; ``str(value)`` is escaped.

    Returns
    -------
    str
    """
    return html.escape(str(value), quote=True)


def html_table(header, rows, *, max_rows: int = MAX_TABLE_ROWS, what: str = "rows",
               text: bool = False) -> str:
    """An HTML table of escaped cells, cut to ``max_rows`` rows with a count of the rest.

    Parameters
    ----------
    header : sequence
        Column titles.
    rows : sequence of sequence
        Cells; each is escaped with :func:`esc`.
    max_rows : int, default=MAX_TABLE_ROWS
        Rows shown at most.
    what : str, default="rows"
        What a row is, for the line that counts the rows left out (e.g. ``"classes"``).
    text : bool, default=False
        Left-align every column (tables of words); numbers are right-aligned otherwise.

    Returns
    -------
    str
        The table inside a scrolling ``div`` (long tables scroll in their own box).
    """
    rows = list(rows)
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                   for row in rows[:max_rows])
    table = '<table class="text">' if text else "<table>"
    out = f'<div class="scroll">{table}<thead><tr>{head}</tr></thead><tbody>{body}'
    out += "</tbody></table></div>"
    if len(rows) > max_rows:
        out += (f'<p class="more">{max_rows} of {len(rows)} {esc(what)} shown; '
                "report.json holds them all.</p>")
    return out


def png_data_uri(path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI.

    Parameters
    ----------
    path : str or path-like
        The PNG.

    Returns
    -------
    str
    """
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _figure(title: str, path) -> str:
    return (f'<figure><img alt="{esc(title)}" src="{png_data_uri(path)}">'
            f"<figcaption>{esc(title)}</figcaption></figure>")


def html_page(title: str, body: list) -> str:
    """A complete HTML5 document with the report's inline style.

    Parameters
    ----------
    title : str
        The page title (escaped).
    body : list of str
        HTML fragments, joined in order.

    Returns
    -------
    str
    """
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _pm(mean: dict, std: dict, key: str, fmt: str = ".3f") -> str:
    if mean.get(key) is None:
        return "n/a"
    return f"{mean[key]:{fmt}} ± {std[key]:{fmt}}"


def _fmt(value, fmt: str = ".3f") -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:{fmt}}"


def _messages(warnings: list, notes: list) -> list:
    return ([f'<p class="warn"><b>Warning:</b> {esc(w)}</p>' for w in warnings]
            + [f'<p class="note">{esc(n)}</p>' for n in notes])


def report_html(rep, figures: dict | None = None) -> str:
    """The HTML page of a cross-validated :class:`pipelines.report.Report`.

    Parameters
    ----------
    rep : pipelines.report.Report
        The report.
    figures : dict or None
        Figure kind (``"confusion_matrix"``, ``"embeddings_2d"``, ``"training_curves"``)
        -> PNG path; each is embedded as a data URI. ``None``: tables only.

    Returns
    -------
    str
        A self-contained HTML document.
    """
    figures = figures or {}
    body = _overview(rep) + _heads(rep) + _per_class(rep) + _confusion(rep, figures)
    body += _retrieval(rep) + _training(rep, figures) + _settings(rep)
    if "embeddings_2d" in figures:
        body += [f"<h2>{_FIGURE_TITLES['embeddings_2d']}</h2>",
                 _figure(_FIGURE_TITLES["embeddings_2d"], figures["embeddings_2d"])]
    return html_page("Cross-validated report", body)


def _overview(rep) -> list:
    emb = rep.embedder
    shown = ", ".join(rep.classes[:20]) + (
        f" and {len(rep.classes) - 20} more" if len(rep.classes) > 20 else "")
    items = [f"images: {rep.n_samples}, classes ({len(rep.classes)}): {shown}",
             f"cross-validation: {rep.cv.n_splits} folds, {rep.cv.splitter}",
             f"refit_encoder: {rep.refit_encoder}",
             f"embedder: {emb.class_name} (encoder {emb.params.get('encoder', '?')}"
             + (", frozen)" if emb.frozen else ")"),
             f"best head: {rep.best_head} — {rep.best_head_rule}"]
    out = ["<h1>Cross-validated report</h1>",
           "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"]
    out += _messages(rep.warnings, rep.notes)
    if rep.validation:
        out.append(f'<p class="note"><b>Validation:</b> {esc(rep.validation)}</p>')
    return out


def _heads(rep) -> list:
    names = list(rep.heads)
    rows = [[label] + [_pm(rep.heads[n].mean, rep.heads[n].std, key) for n in names]
            for key, label in METRIC_NAMES.items()]
    rows += [[f"head {key.replace('_', ' ')} (s per fold)"]
             + [_pm(rep.heads[n].mean, rep.heads[n].std, key, ".4f") for n in names]
             for key in ("fit_time", "predict_time")]
    per_fold = [[n, METRIC_NAMES[k]] + [_fmt(v) for v in rep.heads[n].folds[k]]
                for n in names for k in METRIC_NAMES]
    fold_header = ["head", "metric"] + [f"fold {i + 1}" for i in range(rep.cv.n_splits)]
    return ["<h2>Heads side by side (mean ± std over folds)</h2>",
            html_table(["metric", *names], rows),
            "<h2>Per fold</h2>", html_table(fold_header, per_fold)]


def _per_class(rep) -> list:
    header, rows = per_class_rows(rep)
    return ["<h2>Per class: precision / recall / F1 (pooled out-of-fold predictions)</h2>",
            html_table(header, rows, what="classes")]


def _confusion(rep, figures: dict) -> list:
    cm = rep.heads[rep.best_head].confusion_matrix
    out = [f"<h2>Confusion matrix of {esc(rep.best_head)} (summed over folds; rows: true, "
           "columns: predicted)</h2>"]
    if "confusion_matrix" in figures:
        out.append(_figure(_FIGURE_TITLES["confusion_matrix"], figures["confusion_matrix"]))
    if len(rep.classes) <= MAX_MATRIX_CLASSES:
        out.append(html_table(["true \\ pred", *rep.classes],
                              [[c, *r] for c, r in zip(rep.classes, cm, strict=True)]))
    pairs = confused_pairs(cm, rep.classes)
    out.append("<h2>Most confused pairs</h2>")
    if not pairs:
        return out + ["<p>No image was misclassified.</p>"]
    rows = [[t, p, count, f"{share:.1%}"] for t, p, count, share in pairs]
    return out + [html_table(["true", "predicted as", "images", "share of true class"], rows)]


def _retrieval(rep) -> list:
    ret = rep.retrieval
    rows = [[retrieval_label(key, ret.k), _pm(ret.mean, ret.std, key)]
            + [_fmt(f.get(key)) for f in ret.folds]
            for key in RETRIEVAL_NAMES if key in ret.mean]
    header = ["score", "mean ± std", *[f"fold {i + 1}" for i in range(len(ret.folds))]]
    return ["<h2>Retrieval scores of the held-out embeddings (leave-one-out)</h2>",
            html_table(header, rows), f'<p class="note">{esc(ret.note)}</p>']


def _training(rep, figures: dict) -> list:
    out = ["<h2>Training</h2>"]
    if "training_curves" in figures:
        out.append(_figure(_FIGURE_TITLES["training_curves"], figures["training_curves"]))
    if rep.embedder.frozen:
        trained = [("encoder", rep.embedder.history, None)]
    else:
        trained = [(f"fold {f.index + 1}", f.history, f.encoder_fit_time) for f in rep.folds]
    rows = [[name, len(hist["loss"]), _fmt(last_value(hist, "loss"), ".4f"),
             _fmt(last_value(hist, "val_precision_at_1"), ".4f"),
             _fmt(last_value(hist, "val_map_at_r"), ".4f"), _fmt(fit_time, ".1f")]
            for name, hist, fit_time in trained if hist.get("loss")]
    if not rows:
        return out + ["<p>No encoder was trained during this evaluation.</p>"]
    return out + [html_table(["trained", "epochs", "final loss", "final val P@1",
                              "final val MAP@R", "training time (s)"], rows)]


def _settings(rep) -> list:
    cv = rep.cv
    rows = [["cv.n_splits", cv.n_splits], ["cv.splitter", cv.splitter],
            ["cv.random_state", cv.random_state], ["cv.n_jobs", cv.n_jobs],
            ["refit_encoder", rep.refit_encoder], ["embedder", rep.embedder.class_name]]
    rows += [[f"embedder.{k}", v] for k, v in rep.embedder.params.items()]
    rows += [[f"head {n}", h.estimator] for n, h in rep.heads.items()]
    return ["<h2>Settings</h2>", html_table(["setting", "value"], rows, text=True)]


def open_set_html(rep, metrics: dict, histogram=None) -> str:
    """The HTML page of an :class:`pipelines.report.OpenSetReport`.

    Parameters
    ----------
    rep : pipelines.report.OpenSetReport
        The report.
    metrics : dict
        Metric key of ``rep.folds`` -> its description, in the order of the table.
    histogram : str or path-like or None
        The PNG of known vs unknown scores, embedded as a data URI; ``None``: none.

    Returns
    -------
    str
        A self-contained HTML document.
    """
    n = len(rep.folds)
    rows = [[text, *(_fmt(f[m], ".4f") for f in rep.folds),
             f"{_fmt(rep.mean[m], '.4f')} ± {_fmt(rep.std[m], '.4f')}"]
            for m, text in metrics.items()]
    hidden = [[f"fold {i + 1}", ", ".join(map(str, f["unknown_classes"])), f["n_train"],
               f["n_known_test"], f["n_unknown_test"], _fmt(f["threshold"], ".4f"),
               "n/a" if f["encoder_saw_unknown"] is None else f["encoder_saw_unknown"]]
              for i, f in enumerate(rep.folds)]
    intro = (f"Score {rep.score}, threshold calibrated to accept {rep.target_tpr:g} of "
             f"held-out known images; rejected images are labelled {rep.unknown_label!r}. "
             f"{rep.n_samples} images, {len(rep.classes)} classes, {rep.cv['n_splits']} "
             f"folds hiding {rep.cv['unknown_classes']} classes each.")
    body = ["<h1>Open-set report</h1>", f"<p>{esc(intro)}</p>",
            *_messages(rep.warnings, rep.notes),
            html_table(["metric", *(f"fold {i + 1}" for i in range(n)), "mean ± std"], rows)]
    if histogram is not None:
        body += ["<h2>Known vs unknown scores</h2>", _figure("open-set scores", histogram)]
    body += ["<h2>Hidden classes</h2>",
             html_table(["fold", "unknown classes", "train images", "known test",
                         "unknown test", "threshold", "encoder saw unknown images"], hidden,
                        text=True),
             "<h2>Settings</h2>",
             html_table(["setting", "value"],
                        [["head", rep.head], ["score", rep.score],
                         ["target_tpr", rep.target_tpr], *[[f"cv.{k}", v] for k, v in
                                                           rep.cv.items()],
                         *[[f"embedder.{k}", v] for k, v in rep.embedder.items()]],
                        text=True)]
    return html_page("Open-set report", body)
