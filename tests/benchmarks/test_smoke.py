"""Smoke test of the benchmark suite: every benchmark runs on tiny inputs, the report renders.

The figures of a smoke run mean nothing; what is checked is that each benchmark produces a
complete results record and that ``BENCHMARKS.md`` is rendered from it.
"""

import json
import math

import pytest

from benchmarks import report, run
from benchmarks.common import target


def _numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, float):
        yield value


def test_smoke_run_writes_every_result_and_the_report(tmp_path):
    results, out = tmp_path / "results", tmp_path / "BENCHMARKS.md"
    code = run.main(["--smoke", "--results-dir", str(results), "--report", str(out)])

    records = {p.stem: json.loads(p.read_text()) for p in results.glob("*.json")}
    assert set(records) == set(run.BENCHMARKS)
    for name, record in records.items():
        # only a missing data set may stop a benchmark, and it must say how to install it
        assert record["status"] in ("ok", "unavailable"), record.get("traceback")
        if record["status"] == "unavailable":
            assert "not installed" in record["reason"] or "not found" in record["reason"]
            continue
        assert record["mode"] == "smoke"
        assert record["command"].startswith("python")
        assert record["machine"]["cpu_count"] >= 1
        assert record["machine"]["tensorflow"]
        result = record["result"]
        assert all(math.isfinite(x) for x in _numbers(result) if x is not None), name
        for t in result["targets"]:
            assert t["met"] in (True, False), (name, t)
    assert code == (0 if all(r["status"] == "ok" for r in records.values()) else 1)

    text = out.read_text()
    for _, title in run.BENCHMARKS.values():
        assert f"## {title}" in text
    assert "MET (smoke)" in text or "MISSED (smoke)" in text


def test_target_records_threshold_and_direction():
    assert target("speed", 21.0, 20, unit="x")["met"] is True
    assert target("speed", 19.99, 20, unit="x")["met"] is False
    slow = target("time", 901.0, 900, higher_is_better=False, unit=" s")
    assert (slow["met"], slow["target"], slow["measured"]) == (False, "<= 900 s", 901.0)
    assert target("nothing", None, 1)["met"] is None
    assert target("nan", float("nan"), 1)["met"] is None


def test_report_shows_an_unavailable_benchmark_and_its_reason(tmp_path):
    record = {
        "name": "classification", "title": "Fashion-MNIST classification", "mode": "quick",
        "status": "unavailable", "reason": "Fashion-MNIST is not installed",
        "command": "python -m benchmarks.run --quick", "started": "2026-01-01T00:00:00",
        "wall_seconds": 0.1, "load_average_after": [1.0, 1.0, 1.0], "options": {},
        "machine": {"platform": "Linux", "machine": "x86_64", "processor": "cpu",
                    "cpu_count": 2, "usable_cpus": 2, "load_average": [1.0, 1.0, 1.0],
                    "python": "3.11", "tensorflow": "2", "keras": "3",
                    "scikit_learn": "1", "numpy": "2", "git_commit": None},
    }
    (tmp_path / "classification.json").write_text(json.dumps(record))
    text = report.write_report(tmp_path, tmp_path / "B.md").read_text()
    assert "| Fashion-MNIST classification | all | | not run | UNAVAILABLE |" in text
    assert "**UNAVAILABLE**: Fashion-MNIST is not installed" in text


def test_report_without_results_says_how_to_get_them(tmp_path):
    text = report.write_report(tmp_path, tmp_path / "B.md").read_text()
    assert "No results yet: run `make bench-quick` or `make bench`." in text


def test_run_rejects_an_unknown_benchmark_name(capsys):
    with pytest.raises(SystemExit):
        run.parse_args(["--quick", "--only", "throughput,speed"])
    assert "--only must name benchmarks among" in capsys.readouterr().err
