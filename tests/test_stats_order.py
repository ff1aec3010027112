"""Edges a plausible one-line bug would move, each pinned by data that tells the two apart:
table order by p50 (not p95), compare order by the p50 change (not the p95 change), exactly N
runs for `--last N`, and `--until` exclusive inside a month."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mantisd.cli import mantis
from tests.stats_data import GOLDEN, golden_run, line, write_golden, write_shard

WF = "default__order-v1"


def invoke(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(mantis, ["runs", *args, "--data-dir", str(data_dir)])


def run(k: int, day: int = 13, **breakdown: float) -> bytes:
    finished = f"2026-05-{day:02d}T10:{k // 60:02d}:{k % 60:02d}Z"
    return line(
        run_id=f"run-{day}-{k}",
        workflow_id=WF,
        finished_at=finished,
        created_at=finished,
        total_time_s=sum(breakdown.values()),
        wall_time_breakdown=breakdown,
    )


def test_stats_orders_buckets_by_p50_even_when_p95_orders_them_otherwise(data_dir: Path) -> None:
    # steady: p50 50, p95 50. spiky: p50 10, p95 ~554. tail: p50 1, p95 ~50.5 (p99 beats steady)
    lines = [run(k, steady=50.0, spiky=10.0, tail=1.0) for k in range(9)]
    lines.append(run(9, steady=50.0, spiky=1000.0, tail=100.0))
    write_shard(data_dir, "2026-05", lines)
    table = invoke(data_dir, "stats", WF)
    assert table.exit_code == 0, table.output
    names = [text.split()[0] for text in table.stdout.splitlines()[4:7]]
    assert names == ["steady", "spiky", "tail"]
    percentiles = json.loads(invoke(data_dir, "stats", WF, "--json").stdout)["percentiles"]
    assert list(percentiles) == ["steady", "spiky", "tail", "total_time_s"]
    assert percentiles["spiky"]["p95"] > percentiles["steady"]["p95"]


def test_compare_orders_by_the_p50_change_even_when_the_p95_change_says_otherwise(
    data_dir: Path,
) -> None:
    # Three runs a side can never be significant (exact U test: p >= 0.1), so no verdict
    # reorders them: `median` moves its p50 by +20%, `spike` its p95 by +810% and p50 by 0.
    baseline = [run(k, day=1, median=10.0, spike=10.0) for k in range(3)]
    current = [run(k, day=20, median=12.0, spike=10.0) for k in range(2)]
    current.append(run(2, day=20, median=12.0, spike=100.0))
    write_shard(data_dir, "2026-05", baseline + current)
    windows = ["--since", "2026-05-15", "--until", "2026-05-25", "--baseline-since", "2026-05-01"]
    document = json.loads(invoke(data_dir, "compare", WF, *windows, "--json").stdout)
    rows = {b["bucket"]: b for b in document["buckets"]}
    assert rows["spike"]["p95_change"] > rows["median"]["p95_change"] > 0
    assert {b["verdict"] for b in document["buckets"]} == {"~"}
    assert [b["bucket"] for b in document["buckets"]] == ["median", "spike", "total_time_s"]
    table = invoke(data_dir, "compare", WF, *windows).stdout.splitlines()
    names = [text.split()[0] for text in table if text.startswith(("median", "spike"))]
    assert names == ["median", "spike"]


@pytest.mark.parametrize("last", [1, 2, 3, 4, 5, 6, 50])
def test_last_n_takes_exactly_the_n_newest_runs(data_dir: Path, last: int) -> None:
    write_golden(data_dir)  # five succeeded golden runs, think = 20 * k, logged k = 1..5
    document = json.loads(invoke(data_dir, "stats", GOLDEN, "--last", str(last), "--json").stdout)
    newest = [20.0 * k for k in range(5, 5 - min(last, 5), -1)]
    assert document["run_count"] == len(newest)
    think = document["percentiles"]["think"]
    assert (think["p50"], think["p99"]) == pytest.approx(oracle(newest, [50, 99]))


def oracle(values: list[float], ranks: list[int]) -> list[float]:
    """numpy's linear method, by the standard library's inclusive quantiles."""
    if len(values) == 1:
        return values * len(ranks)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return [cuts[rank - 1] for rank in ranks]


def test_until_is_exclusive_inside_a_month(data_dir: Path) -> None:
    write_shard(
        data_dir,
        "2026-05",
        [
            golden_run(1, finished_at="2026-05-13T11:59:59.999999Z"),  # just before: in
            golden_run(2, finished_at="2026-05-13T12:00:00Z"),  # exactly on --until: out
            golden_run(3, finished_at="2026-05-13T12:00:00.000001Z"),  # after: out
        ],
    )
    window = ["--since", "2026-05-13T06:00:00Z", "--until", "2026-05-13T12:00:00Z"]
    document = json.loads(invoke(data_dir, "stats", GOLDEN, *window, "--json").stdout)
    assert document["run_count"] == 1
    assert document["percentiles"]["think"]["p50"] == 20.0
