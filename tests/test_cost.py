"""`--breakdown cost`: cost_breakdown's numeric entries, aggregated like buckets everywhere."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pytest

from mantisd.stats.costs import format_cost, numeric_costs
from tests.analysis_data import START, WORKFLOW, document, invoke, run, write


def raw(value: object) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode(value))


def test_numeric_entries_are_kept_and_the_others_counted() -> None:
    costs = numeric_costs(
        [
            raw({"usd": 0.5, "tokens": 1200, "gpu_s": 3}),
            raw({"usd": "0.5", "free": True, "note": None, "nested": {"usd": 1}, "big": 10**400}),
            raw([1, 2]),  # not an object at all: one ignored entry
            raw({}),
        ]
    )
    assert costs == [
        ({"usd": 0.5, "tokens": 1200.0, "gpu_s": 3.0}, 0),
        ({}, 5),
        ({}, 1),
        ({}, 0),
    ]


@pytest.mark.parametrize(
    ("name", "value", "text"),
    [
        ("usd", 0.012, "$0.012"),
        ("usd", 0.0012, "$0.0012"),
        ("claude", 12.5, "$12.500"),
        ("usd", 1234.5, "$1,234.500"),
        ("usd", 0.0, "$0.000"),
        ("refund", -0.25, "-$0.250"),
        ("input_tokens", 45210.0, "45,210"),
        ("tokens", 12.5, "12.5"),
        ("gpu_s", 12.34, "12.3s"),
    ],
)
def test_cells_carry_their_unit(name: str, value: float, text: str) -> None:
    assert format_cost(name, value) == text


@pytest.fixture
def costs_dir(data_dir: Path) -> Path:
    """Run k costs k cents (`usd`) and 1000 k tokens; run 2 carries two non-numeric entries,
    run 1 one (and run 1 is the oldest)."""
    lines = [run(1, cost_breakdown={"usd": 0.01, "input_tokens": 1000, "currency": "USD"})]
    lines.append(run(2, cost_breakdown={"usd": 0.02, "input_tokens": 2000, "a": "x", "b": None}))
    lines += [run(k, cost_breakdown={"usd": k / 100, "input_tokens": 1000 * k}) for k in (3, 4, 5)]
    lines.append(run(6, cost_breakdown={"input_tokens": 6000}))  # no usd
    write(data_dir, lines)
    return data_dir


def test_stats_cost_json(costs_dir: Path) -> None:
    result = invoke("stats", costs_dir, "--breakdown", "cost", "--json")
    assert result.exit_code == 0, result.output
    doc = document(result)
    assert list(doc) == ["workflow_id", "breakdown", "run_count", "percentiles", "ignored_entries"]
    assert doc["breakdown"] == "cost" and doc["run_count"] == 6 and doc["ignored_entries"] == 3
    # input_tokens 1000..6000, usd 0.01..0.05 (run 6 has none); no total: units differ
    assert doc["percentiles"] == {
        "input_tokens": {"p50": 3500.0, "p95": 5750.0, "p99": 5950.0},
        "usd": {"p50": 0.03, "p95": 0.048, "p99": 0.0496},
    }
    assert result.stderr == (
        "note: reported by fewer runs: usd (5 of 6)\n"
        "note: ignored 3 non-numeric cost_breakdown entries of the selected runs\n"
    )


def test_stats_cost_counts_only_the_selected_runs(costs_dir: Path) -> None:
    doc = document(invoke("stats", costs_dir, "--breakdown", "cost", "--json", "--last", "5"))
    assert doc["run_count"] == 5 and doc["ignored_entries"] == 2  # run 1 is not among them
    result = invoke("stats", costs_dir, "--breakdown", "cost", "--last", "4")
    assert "ignored" not in result.stderr


def test_stats_cost_table(costs_dir: Path) -> None:
    result = invoke("stats", costs_dir, "--breakdown", "cost")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"cost_breakdown across last 6 succeeded runs of {WORKFLOW}:\n\n"
        "bucket                   p50        p95        p99\n"
        "──────────────────────────────────────────────────\n"
        "input_tokens           3,500      5,750      5,950\n"
        "usd                   $0.030     $0.048     $0.050\n"
    )


def test_stats_cost_unknown_component_is_a_usage_error(costs_dir: Path) -> None:
    result = invoke("stats", costs_dir, "--breakdown", "cost", "--bucket", "think")
    assert result.exit_code == 2
    assert "'think': no selected run reports this cost_breakdown entry" in result.stderr
    assert "(reported: input_tokens, usd)" in result.stderr


def test_compare_cost(data_dir: Path) -> None:
    september = START - dt.timedelta(days=30)
    lines = [run(k, month_start=september, cost_breakdown={"usd": 0.01 * k}) for k in range(1, 31)]
    write(data_dir, lines, "2026-09")
    current = [
        run(k, run_id=f"c-{k}", cost_breakdown={"usd": 0.02 * k, "memo": "x"}) for k in range(1, 31)
    ]
    write(data_dir, current)
    args = ["--since", "2026-10-01", "--until", "2026-10-02", "--baseline-since", "2026-09-01"]
    result = invoke("compare", data_dir, *args, "--breakdown", "cost", "--json")
    assert result.exit_code == 0, result.output
    doc = document(result)
    assert list(doc)[:2] == ["workflow_id", "breakdown"] and doc["breakdown"] == "cost"
    (usd,) = doc["buckets"]  # no total_time_s
    assert usd["bucket"] == "usd" and usd["verdict"] == "regressed"
    assert usd["baseline"]["p50"] == 0.155 and usd["current"]["p50"] == 0.31
    assert "ignored 30 non-numeric" in result.stderr
    table = invoke("compare", data_dir, *args, "--breakdown", "cost").stdout
    assert "$0.155" in table and "$0.310" in table and "total_time_s" not in table


def test_trend_cost(costs_dir: Path) -> None:
    args = ["--since", "2026-10-01", "--until", "2026-10-02", "--every", "1d"]
    result = invoke("trend", costs_dir, *args, "--breakdown", "cost", "--bucket", "usd", "--json")
    assert result.exit_code == 0, result.output
    doc = document(result)
    assert doc["breakdown"] == "cost" and doc["bucket"] == "usd"
    (period,) = doc["periods"]
    assert (period["n"], period["p50"]) == (5, 0.03)
    table = invoke("trend", costs_dir, *args, "--breakdown", "cost", "--bucket", "usd").stdout
    assert "$0.030" in table and "(full: $0.030)" in table
    missing = invoke("trend", costs_dir, *args, "--breakdown", "cost")
    assert missing.exit_code == 2
    assert "name the cost_breakdown entry to follow (reported: input_tokens, usd)" in missing.stderr


def test_slowest_cost(costs_dir: Path) -> None:
    doc = document(invoke("slowest", costs_dir, "--breakdown", "cost", "--bucket", "usd", "--json"))
    assert doc["breakdown"] == "cost"
    assert [(r["run_id"], r["value"]) for r in doc["runs"]] == [
        ("run-0005", 0.05),
        ("run-0004", 0.04),
        ("run-0003", 0.03),
        ("run-0002", 0.02),
        ("run-0001", 0.01),
    ]
    table = invoke("slowest", costs_dir, "--breakdown", "cost", "--bucket", "usd", "-n", "1")
    assert table.stdout.startswith("Top 1 of last 6 succeeded runs of")
    assert "$0.050" in table.stdout and "others: input_tokens 5,000" in table.stdout
    missing = invoke("slowest", costs_dir, "--breakdown", "cost")
    assert missing.exit_code == 2 and "name the cost_breakdown entry to rank by" in missing.stderr
