"""Render ``BENCHMARKS.md`` from the results JSON files (``python -m benchmarks.report``).

Every figure comes from ``benchmarks/results/<name>.json``; nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import RESULTS_DIR, summary
from benchmarks.fit_teardown import MODES as TEARDOWN_MODES
from benchmarks.issue14_table import issue_14_table
from benchmarks.report_sections import SECTIONS

ORDER = ("throughput", "input_pipeline", "inference", "classification", "retrieval",
         "loss_comparison", "peer", "profile_step")
#: Last known values and out-of-runner measurements of issue 14's targets (no "name" key,
#: so :func:`load_records` skips it).
ISSUE_14_HISTORY = "issue14_history.json"
#: JSON lines of ``python -m benchmarks.fit_teardown`` (one training run each).
TEARDOWN = "teardown.jsonl"
#: JSON lines of ``python -m benchmarks.photos`` (one recipe tried on the flowers split each).
PHOTOS = "photos.jsonl"
#: Measurements taken by hand (whole commands, before/after pairs), kept verbatim at the end.
HAND_RECORDED = "hand_recorded.md"
MODE_NOTE = {
    "quick": "quick mode (`make bench-quick`): reduced data, epochs and repetitions; "
             "indicative only, the targets apply to the full protocol (`make bench`)",
    "smoke": "smoke mode: tiny inputs that only check the code runs; the figures mean nothing",
    "full": "full protocol (`make bench`)",
}


def load_records(results_dir):
    records = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and "name" in record:
            records[record["name"]] = record
    return [records[n] for n in (*ORDER, *sorted(set(records) - set(ORDER))) if n in records]


def status_text(t, mode):
    text = {True: "MET", False: "MISSED", None: "n/a"}[t["met"]]
    return f"{text} ({mode})" if mode != "full" else text


def _fmt(value, unit=""):
    return "n/a" if value is None else f"{value:g}{unit}"


def summary_table(records):
    lines = ["| benchmark | target | required | measured | status |",
             "| --- | --- | --- | --- | --- |"]
    for r in records:
        if r["status"] != "ok":
            lines.append(f"| {r['title']} | all | | not run | {r['status'].upper()} |")
            continue
        for t in r["result"].get("targets", []):
            lines.append(f"| {r['title']} | {t['name']} | {t['target']} | "
                         f"{_fmt(t['measured'], t['unit'])} | **{status_text(t, r['mode'])}** |")
    return lines


def machine_lines(records):
    seen = {}
    for r in records:
        m = r["machine"]
        key = (m["platform"], m["processor"], m["cpu_count"], m["tensorflow"], m["keras"])
        seen.setdefault(key, m)
    lines = []
    for m in seen.values():
        lines += [
            f"- {m['processor']} ({m['machine']}), {m['cpu_count']} CPUs "
            f"({m['usable_cpus']} usable), {m['platform']}",
            f"- Python {m['python']}, TensorFlow {m['tensorflow']}, Keras {m['keras']}, "
            f"scikit-learn {m['scikit_learn']}, NumPy {m['numpy']}"
            + (f"; code at commit {m['git_commit']} (plus uncommitted changes, if any)"
               if m.get("git_commit") else ""),
        ]
    return lines


def section(r):
    lines = [f"## {r['title']}", ""]
    lines.append(f"- Mode: {MODE_NOTE.get(r['mode'], r['mode'])}")
    lines.append(f"- Command: `{r['command']}`; ran {r['started']} for {r['wall_seconds']} s; "
                 f"load average {r['machine']['load_average'][0]} at start, "
                 f"{r.get('load_average_after', ['?'])[0]} at end (1-minute load averages; "
                 "this run itself adds 1 to 2)")
    if r.get("options"):
        lines.append(f"- Overrides: `{json.dumps(r['options'])}`")
    lines.append("")
    if r["status"] != "ok":
        lines += [f"**{r['status'].upper()}**: {r['reason']}", ""]
        return lines
    renderer = SECTIONS.get(r["name"])
    if renderer is not None:
        lines += renderer(r["result"])
        lines.append("")
    targets = r["result"].get("targets", [])
    if targets:
        lines.append("Targets:")
        lines.append("")
        for t in targets:
            status = status_text(t, r["mode"])
            line = (f"- **{status}**: {t['name']} {t['target']}; measured "
                    f"{_fmt(t['measured'], t['unit'])}")
            if t.get("note"):
                line += f" ({t['note']})"
            lines.append(line)
            if t["met"] is False and t.get("if_missed"):
                lines.append(f"  - Why, and what would close it: {t['if_missed']}")
        lines.append("")
    return lines


def teardown_lines(rows):
    """The end-of-fit wait with tf.data autotuning on and off, from ``teardown.jsonl``."""
    lines = [
        "Seconds between the last `on_train_end` and `fit` returning: tf.data's autotuning "
        "thread sleeps on a timer that deleting the training iterator does not cut short, "
        "so with autotuning on `fit` could wait for it; the library's pipelines switch it "
        "off. Command: `python -m benchmarks.fit_teardown --rounds 5 --epochs 2` (the peer "
        "network, whole hard-5 training split, fresh subprocesses, modes alternating).", "",
        "| autotuning | runs | runs that waited > 1 s | waits (s) | images/s, median "
        "| images/s without the wait, median |", "| --- | --- | --- | --- | --- | --- |",
    ]
    for mode in TEARDOWN_MODES:
        got = [r for r in rows if r["autotune"] == mode]
        if not got:
            continue
        waits = [r["teardown_seconds"] for r in got if r["teardown_seconds"] > 1]
        lines.append(
            f"| {mode} | {len(got)} | {len(waits)} | {', '.join(map(str, waits)) or '-'} | "
            f"{summary(r['images_per_second'] for r in got)['median']} | "
            f"{summary(r['images_per_second_without_teardown'] for r in got)['median']} |")
    finished = sorted(r.get("finished", "") for r in rows)
    lines += ["", f"Runs finished {finished[0]} to {finished[-1]}."] if finished[0] else []
    return lines


def photo_lines(rows):
    """The recipes tried on the flowers 80/20 split, from ``photos.jsonl``, best first."""
    lines = [
        "Each row one `python -m benchmarks.photos ...` run: an encoder trained from scratch "
        "on 3,453 flower photos, the heads scored on the 864 held out (stratified 80/20, "
        "seed 0). Target: best head >= 0.80 with training <= 600 s on 2 cores.", "",
        "| encoder | px | augment | loss | P x K | epochs run (stop) | training s | cores "
        "(own / others) | knn | logreg | svm | finished |",
        "|" + " --- |" * 12,
    ]
    for r in sorted(rows, key=lambda r: -r["best"]):
        p = r["params"]
        batch = f"{p.get('classes_per_batch', 'default')} x {p.get('samples_per_class', 'default')}"
        size = p["input_shape"].strip("()").split(",")[0]
        acc = r["accuracy"]
        lines.append(
            f"| {p['encoder']} | {size} | {p['augment']} | {p['loss']} | {batch} | "
            f"{r['epochs_run']} ({r['stop_reason']}) | {r['train_seconds']} | "
            f"{r['own_cores']} / {r['foreign_cores']} | {acc['knn']:.4f} | "
            f"{acc['logreg']:.4f} | {acc['svm']:.4f} | {r['finished']} |")
    return lines


def render(records, history=None, teardown=None, photos=None, hand_recorded=None):
    lines = [
        "# Benchmarks", "",
        "Generated by `python -m benchmarks.report` from `benchmarks/results/*.json`, which "
        "`make bench` (full protocol, DESIGN section 6) and `make bench-quick` (reduced, under "
        "5 minutes) rewrite. Do not edit by hand: every figure is a measurement of the run "
        "named in its section; the hand-recorded sections at the end (whole commands timed "
        "by hand, with the machine's load) are copied from "
        "`benchmarks/results/hand_recorded.md`.", "",
    ]
    if not records:
        return "\n".join([*lines, "No results yet: run `make bench-quick` or `make bench`.", ""])
    modes = sorted({r["mode"] for r in records})
    lines += ["## Machine", "", *machine_lines(records), "",
              f"Modes in these results: {', '.join(modes)}.", ""]
    lines += ["## Targets", "", *summary_table(records), ""]
    if history is not None:
        lines += ["## Issue 14 targets", "", *issue_14_table(records, history), ""]
    for r in records:
        lines += section(r)
    if teardown:
        lines += ["## End-of-fit wait (tf.data autotuning)", "", *teardown_lines(teardown), ""]
    if photos:
        lines += ["## Photo recipes tried (flowers 80/20)", "", *photo_lines(photos), ""]
    if hand_recorded:
        lines += [hand_recorded.strip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def _json_lines(path):
    """The records of a JSON-lines file; None when there is no such file."""
    if not path.exists():
        return None
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_report(results_dir=RESULTS_DIR, out=None):
    out = Path(out) if out is not None else Path(results_dir).parent / "BENCHMARKS.md"
    history_path = Path(results_dir) / ISSUE_14_HISTORY
    history = json.loads(history_path.read_text()) if history_path.exists() else None
    teardown, photos = (_json_lines(Path(results_dir) / name) for name in (TEARDOWN, PHOTOS))
    hand_path = Path(results_dir) / HAND_RECORDED
    hand = hand_path.read_text(encoding="utf-8") if hand_path.exists() else None
    from embedder.files import atomic_write_text

    atomic_write_text(out, render(load_records(results_dir), history, teardown, photos, hand))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    print(write_report(args.results_dir, args.out))


if __name__ == "__main__":
    main()
