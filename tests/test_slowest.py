"""`mantis runs slowest` and `stats --exemplars`: from a percentile to the runs behind it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from mantisd.sample import generate, workflow_ids
from mantisd.schema import BUCKETS, TOTAL
from mantisd.stats.percentiles import percentile
from mantisd.stats.query import StatsQuery, select
from tests.analysis_data import UTC, WORKFLOW, document, invoke, run, write


@pytest.fixture
def runs_dir(data_dir: Path) -> Path:
    """Runs 1-6 (total 10k); run 3 failed with an object error; run 5 has no `settle`;
    run 6 is a copy of run 4's total (a tie)."""
    breakdown_5 = {b: 5.0 for b in BUCKETS if b != "settle"}
    write(
        data_dir,
        [
            run(1, model="m-1", plan_signature="plan-1"),
            run(2),
            run(3, status="failed", error={"kind": "timeout", "step": 7}),
            run(4, wall_time_breakdown={**{b: 1.0 for b in BUCKETS}, "think": 30.0}),
            run(5, wall_time_breakdown=breakdown_5, error="slow page"),
            run(6, total_time_s=40.0, model=None, plan_signature=None),
        ],
    )
    return data_dir


def test_slowest_json_ranks_by_total_newest_first_on_ties(runs_dir: Path) -> None:
    result = invoke("slowest", runs_dir, "--json", "--status", "")
    assert result.exit_code == 0, result.output
    doc = document(result)
    assert list(doc) == ["workflow_id", "status", "bucket", "run_count", "runs"]
    assert (doc["bucket"], doc["run_count"], doc["status"]) == (TOTAL, 6, None)
    ranked = [(r["run_id"], r["value"]) for r in doc["runs"]]
    assert ranked == [
        ("run-0005", 50.0),
        ("run-0006", 40.0),  # ties with run 4: the newer run first
        ("run-0004", 40.0),
        ("run-0003", 30.0),
        ("run-0002", 20.0),
        ("run-0001", 10.0),
    ]
    first = doc["runs"][0]
    assert list(first) == [
        "run_id",
        "finished_at",
        "value",
        "status",
        "model",
        "plan_signature",
        "error",
        "values",
    ]
    assert first["finished_at"] == "2026-10-01T00:05:00Z" and first["error"] == "slow page"
    assert "settle" not in first["values"] and first["values"][TOTAL] == 50.0
    assert doc["runs"][3]["error"] == {"kind": "timeout", "step": 7}


def test_slowest_by_a_bucket_skips_runs_without_it(runs_dir: Path) -> None:
    doc = document(invoke("slowest", runs_dir, "--json", "--bucket", "settle", "-n", "2"))
    assert [(r["run_id"], r["value"]) for r in doc["runs"]] == [
        ("run-0006", 6.0),
        ("run-0002", 2.0),
    ]
    assert doc["run_count"] == 5  # the failed run is not selected by default


def test_slowest_table(runs_dir: Path) -> None:
    result = invoke("slowest", runs_dir, "--status", "", "-n", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        f"Slowest 3 of last 6 runs of {WORKFLOW},",
        "by total_time_s (p50 35.0s, p99 49.5s across them):",
    ]
    assert lines[3].split() == ["#", "total_time_s", "run_id", "finished_at", "model"]
    assert lines[5].split() == [
        "1",
        "50.0s",
        "run-0005",
        "2026-10-01T00:05:00Z",
        "Hcompany/Holo3-35B-A3B",
    ]
    # the largest other buckets, ties by name
    assert lines[6].split() == ["plan", "a1b2c3d4e5f6", "top:", "act", "5.0s,"] + [
        "claude_extract",
        "5.0s,",
        "claude_ground",
        "5.0s",
    ]
    assert lines[7].split() == ["error:", "slow", "page"]
    assert lines[8].split()[:5] == ["2", "40.0s", "run-0006", "2026-10-01T00:06:00Z", "(none)"]
    assert lines[9].split()[:2] == ["plan", "(none)"]
    assert lines[10].split()[:3] == ["3", "40.0s", "run-0004"]
    assert max(map(len, lines)) <= 100


def test_slowest_escapes_control_characters_from_rows(data_dir: Path) -> None:
    write(data_dir, [run(1, model="evil\x1b[2Jmodel", error="line one\nline two\x07")])
    result = invoke("slowest", data_dir)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert result.stdout.count("\n") == 8  # the error's newline is escaped, not printed
    assert "error: line one\\nline two\\x07\n" in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--bucket", "nap"], 2, "'nap': no selected run reports it"),
        (["-n", "0"], 2, "0 is not in the range x>=1"),
        (["--status", "failed", "--since", "2027-01-01"], 1, "no failed runs of"),
    ],
)
def test_slowest_bad_input(runs_dir: Path, args: list[str], code: int, message: str) -> None:
    result = invoke("slowest", runs_dir, *args)
    assert result.exit_code == code, result.output
    assert message in result.stderr


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("sample")
    generate(
        data_dir, rows=9000, months=3, workflows=3, seed=5, end=dt.datetime(2026, 10, 1, tzinfo=UTC)
    )
    return data_dir


@pytest.mark.parametrize("last", [20, 4000])
def test_slowest_sees_exactly_the_runs_stats_aggregates(sample_dir: Path, last: int) -> None:
    workflow = workflow_ids(3)[0]
    selection = select(sample_dir, StatsQuery(workflow, last=last, status=None))
    for bucket in ("settle", TOTAL):
        result = invoke(
            "slowest",
            sample_dir,
            "--json",
            "--status",
            "",
            "--last",
            str(last),
            "--bucket",
            bucket,
            "-n",
            "5",
            workflow=workflow,
        )
        doc = document(result)
        assert doc["run_count"] == selection.run_count == last
        assert [r["value"] for r in doc["runs"]] == [
            round(v, 6) for v in selection.values(bucket)[::-1][:5]
        ]


def test_exemplars_are_the_runs_nearest_p95_and_p99(sample_dir: Path) -> None:
    workflow = workflow_ids(3)[0]
    result = invoke(
        "stats", sample_dir, "--exemplars", "--json", "--last", "300", workflow=workflow
    )
    assert result.exit_code == 0, result.output
    doc = document(result)
    assert list(doc) == ["workflow_id", "run_count", "percentiles", "exemplars"]
    selection = select(sample_dir, StatsQuery(workflow, last=300))
    ids = {
        r["run_id"]: r["values"]
        for r in document(
            invoke("slowest", sample_dir, "--json", "-n", "300", "--last", "300", workflow=workflow)
        )["runs"]
    }
    for bucket, found in doc["exemplars"].items():
        values = selection.values(bucket)
        for p in (95, 99):
            target = percentile(values, p)
            exemplar = found[f"p{p}"]
            assert exemplar["value"] == ids[exemplar["run_id"]][bucket]
            assert abs(exemplar["value"] - target) == min(abs(v - target) for v in values)
    assert list(doc["exemplars"]) == list(doc["percentiles"])


def test_exemplars_table(runs_dir: Path) -> None:
    result = invoke("stats", runs_dir, "--exemplars", "--bucket", "think")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    section = lines.index("nearest run      p95                p99")
    assert lines[section + 1].split() == ["think", "run-0004", "(30.0s)", "run-0004", "(30.0s)"]
    # succeeded totals 10, 20, 40, 40, 50: p95 48.0 and p99 49.6 are nearest run 5
    assert lines[section + 2].split() == ["total_time_s", "run-0005", "(50.0s)", "run-0005"] + [
        "(50.0s)"
    ]
