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


def render(records, history=None, teardown=None):
    lines = [
        "# Benchmarks", "",
        "Generated by `python -m benchmarks.report` from `benchmarks/results/*.json`, which "
        "`make bench` (full protocol, DESIGN section 6) and `make bench-quick` (reduced, under "
        "5 minutes) rewrite. Do not edit by hand: every figure is a measurement of the run "
        "named in its section.", "",
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
    return "\n".join(lines).rstrip() + "\n"


def write_report(results_dir=RESULTS_DIR, out=None):
    out = Path(out) if out is not None else Path(results_dir).parent / "BENCHMARKS.md"
    history_path = Path(results_dir) / ISSUE_14_HISTORY
    history = json.loads(history_path.read_text()) if history_path.exists() else None
    teardown_path = Path(results_dir) / TEARDOWN
    teardown = ([json.loads(line) for line in teardown_path.read_text().splitlines() if line]
                if teardown_path.exists() else None)
    from embedder.files import atomic_write_text

    atomic_write_text(out, render(load_records(results_dir), history, teardown))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    print(write_report(args.results_dir, args.out))


if __name__ == "__main__":
    main()
