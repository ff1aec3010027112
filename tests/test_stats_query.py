"""Selection of the last N runs: log order, early stop, month pruning, parallel = sequential."""

from __future__ import annotations

import datetime as dt
import json
import random
from array import array
from pathlib import Path

import pytest

from mantisd.stats import query as query_module
from mantisd.stats.query import Selection, StatsQuery, select
from mantisd.stats.summary import bucket_stats
from tests.rows import utc
from tests.stats_data import GOLDEN, line, write_shard

MONTHS = ["2026-01", "2026-02", "2026-03", "2026-04"]


def month_runs(month: str, count: int, rng: random.Random, **extra: object) -> list[bytes]:
    start = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=dt.UTC)
    lines = []
    for i in range(count):
        finished = start + dt.timedelta(hours=i + 1)
        breakdown = {"think": round(rng.uniform(1, 100), 3), "act": round(rng.uniform(1, 9), 3)}
        if rng.random() < 0.2:
            del breakdown["act"]  # some rows do not report a bucket
        if rng.random() < 0.1:
            breakdown["gpu_warmup"] = 7.0  # and some report another one
        lines.append(
            line(
                workflow_id=GOLDEN if rng.random() < 0.7 else "default__other-v1",
                status="succeeded" if rng.random() < 0.8 else "failed",
                finished_at=utc(finished),
                created_at=utc(finished - dt.timedelta(minutes=1)),
                total_time_s=round(sum(breakdown.values()) + 1, 3),
                wall_time_breakdown=breakdown,
                **extra,
            )
        )
    return lines


@pytest.fixture
def four_months(data_dir: Path) -> Path:
    rng = random.Random(5)
    for month in MONTHS:
        write_shard(data_dir, month, month_runs(month, 300, rng))
    return data_dir


def naive(data_dir: Path, query: StatsQuery) -> tuple[int, dict[str, list[float]]]:
    """The definition, independent of `mantisd.reader`: every shard's lines read whole,
    newest month first and last line first, `json.loads`, the first copy of a `run_id` kept."""
    count, seconds, seen = 0, {}, set()
    for shard in sorted((data_dir / "runs_log").glob("*.jsonl"), reverse=True):
        for text in reversed(shard.read_text().splitlines()):
            row = json.loads(text)  # these shards hold valid rows only
            if row["run_id"] in seen:
                continue
            seen.add(row["run_id"])
            finished = dt.datetime.fromisoformat(row["finished_at"])
            if row["workflow_id"] != query.workflow_id:
                continue
            if query.status and row["status"] != query.status:
                continue
            if query.since and finished < query.since:
                continue
            if query.until and finished >= query.until:
                continue
            pairs = [*row["wall_time_breakdown"].items(), ("total_time_s", row["total_time_s"])]
            for name, value in pairs:
                seconds.setdefault(name, []).append(value)
            count += 1
            if count == query.last:
                return count, {k: sorted(v) for k, v in seconds.items()}
    return count, {k: sorted(v) for k, v in seconds.items()}


def as_lists(selection: Selection) -> tuple[int, dict[str, list[float]]]:
    return selection.run_count, {k: selection.values(k) for k in selection.sorted_runs}


@pytest.mark.parametrize("last", [1, 100, 299, 300, 450, 700, 1200, 5000])
@pytest.mark.parametrize("status", ["succeeded", None])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_selection_equals_the_definition(
    four_months: Path, last: int, status: str | None, workers: int
) -> None:
    query = StatsQuery(GOLDEN, last=last, status=status)
    assert as_lists(select(four_months, query, workers=workers)) == naive(four_months, query)


def test_eager_fan_out_equals_the_definition(
    four_months: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(query_module, "EAGER_FAN_OUT", 10)
    query = StatsQuery(GOLDEN, last=500, status=None)
    assert as_lists(select(four_months, query, workers=2)) == naive(four_months, query)


def test_since_equals_the_definition(four_months: Path) -> None:
    since = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
    query = StatsQuery(GOLDEN, last=10_000, since=since)
    selection = select(four_months, query, workers=2)
    assert as_lists(selection) == naive(four_months, query)
    assert selection.report.shards_read == 2  # January and February are never opened


def test_default_query_reads_only_the_newest_shard(four_months: Path) -> None:
    selection = select(four_months, StatsQuery(GOLDEN, last=100), workers=2)
    assert selection.run_count == 100
    assert selection.report.shards_read == 1


def test_duplicate_across_shards_keeps_the_newest(data_dir: Path) -> None:
    common = {"workflow_id": GOLDEN, "run_id": "same-run"}
    older = line(
        **common,
        finished_at="2026-01-05T00:00:00Z",
        created_at="2026-01-05T00:00:00Z",
        wall_time_breakdown={"think": 1.0},
    )
    newer = line(
        **common,
        finished_at="2026-02-05T00:00:00Z",
        created_at="2026-02-05T00:00:00Z",
        wall_time_breakdown={"think": 2.0},
    )
    filler = line(
        workflow_id=GOLDEN,
        finished_at="2026-01-01T00:00:00Z",
        created_at="2026-01-01T00:00:00Z",
        wall_time_breakdown={"think": 3.0},
    )
    write_shard(data_dir, "2026-01", [filler, older])
    write_shard(data_dir, "2026-02", [newer])
    write_shard(data_dir, "2026-03", [])
    for workers in (1, 2):
        selection = select(data_dir, StatsQuery(GOLDEN, last=10), workers=workers)
        assert selection.run_count == 2
        assert selection.values("think") == [2.0, 3.0]
        assert selection.report.duplicates == 1


def test_bucket_stats_over_sorted_runs_equal_one_sort() -> None:
    rng = random.Random(1)
    runs = {
        b: [array("d", sorted(rng.random() for _ in range(n))) for n in (500, 0, 1, 2000)]
        for b in ("a", "b", "total_time_s")
    }
    flat = {b: [array("d", sorted(v for run in rs for v in run))] for b, rs in runs.items()}
    assert bucket_stats(runs, ["a", "b", "c"]) == bucket_stats(flat, ["a", "b", "c"])
    assert [s.bucket for s in bucket_stats(runs, ["a", "b", "c"])][-2:] == ["c", "total_time_s"]


def test_query_rejects_last_below_one() -> None:
    with pytest.raises(ValueError):
        StatsQuery(GOLDEN, last=0)


def test_sample_rows_decode_through_the_fast_path(data_dir: Path) -> None:
    from mantisd.sample import generate, workflow_ids

    generate(
        data_dir,
        rows=2000,
        months=2,
        workflows=4,
        seed=2,
        end=dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
    )
    wf = workflow_ids(4)[0]
    query = StatsQuery(wf, last=100_000, status=None)
    selection = select(data_dir, query, workers=2)
    assert as_lists(selection) == naive(data_dir, query)
    assert selection.run_count > 500
    assert json.loads(json.dumps(selection.report.__dict__)) == {
        "bad_lines": 0,
        "duplicates": 0,
        "shards_read": 2,
        "damaged": [],
    }
