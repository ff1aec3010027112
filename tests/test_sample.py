"""The sample-data generator: valid, realistic, ordered, deterministic rows."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from mantisd.cli import mantis
from mantisd.sample import generate, sample_chunks, workflow_ids
from mantisd.schema import BUCKETS, validate

END = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)  # exclusive: fills Jan..Mar 2026


@pytest.fixture
def sample_dir(data_dir: Path) -> Path:
    generate(data_dir, rows=600, months=3, workflows=6, seed=3, end=END)
    return data_dir


def lines_of(data_dir: Path) -> dict[str, list[bytes]]:
    shards = sorted((data_dir / "runs_log").glob("*.jsonl"))
    return {p.stem: p.read_bytes().splitlines() for p in shards}


def test_shards_hold_valid_rows_of_their_month_in_finished_at_order(sample_dir: Path) -> None:
    shards = lines_of(sample_dir)
    assert list(shards) == ["2026-01", "2026-02", "2026-03"]
    assert sum(map(len, shards.values())) == 600
    for month, lines in shards.items():
        rows = [validate(line, now=END).row for line in lines]
        assert {r.finished_at.strftime("%Y-%m") for r in rows} == {month}
        finished = [r.finished_at for r in rows]
        assert finished == sorted(finished) and len(set(finished)) == len(finished)
        # the stored line is already canonical: the generator writes what the store would
        assert all(validate(line, now=END).line == line + b"\n" for line in lines)


def test_rows_look_like_the_runtime_s(sample_dir: Path) -> None:
    rows = [json.loads(line) for lines in lines_of(sample_dir).values() for line in lines]
    statuses = Counter(r["status"] for r in rows)
    assert statuses.keys() == {"succeeded", "failed"}
    assert 0.03 < statuses["failed"] / len(rows) < 0.2
    popularity = Counter(r["workflow_id"] for r in rows).most_common()
    assert [w for w, _ in popularity][:1] == workflow_ids(6)[:1]
    assert popularity[0][1] > 2 * popularity[-1][1]  # skewed
    assert len({r["run_id"] for r in rows}) == len(rows)
    for row in rows:
        breakdown = row["wall_time_breakdown"]
        assert tuple(breakdown) == BUCKETS
        assert sum(breakdown.values()) <= row["total_time_s"] <= sum(breakdown.values()) + 2.001
        assert (row["error"] is None) == (row["status"] == "succeeded")
    sizes = [len(line) for lines in lines_of(sample_dir).values() for line in lines]
    assert 450 < sum(sizes) / len(sizes) < 800


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    def chunks(seed: int) -> list[tuple[str, bytes]]:
        return list(sample_chunks(rows=200, months=2, workflows=4, seed=seed, end=END))

    assert chunks(1) == chunks(1)
    assert chunks(1) != chunks(2)


def test_partial_last_month_gets_its_share() -> None:
    end = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)  # one day of March after all of February
    counts = Counter()
    for month, chunk in sample_chunks(rows=290, months=2, workflows=3, seed=0, end=end):
        counts[month] += chunk.count(b"\n")
    assert counts == {"2026-02": 280, "2026-03": 10}


def test_refuses_to_touch_an_existing_shard(sample_dir: Path) -> None:
    before = lines_of(sample_dir)
    with pytest.raises(FileExistsError):
        generate(sample_dir, rows=10, months=1, seed=3, end=END)
    assert lines_of(sample_dir) == before


def test_more_rows_than_seconds_is_an_error(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="do not fit"):
        generate(data_dir, rows=10, months=1, end=dt.datetime(2026, 3, 1, 0, 0, 5, tzinfo=dt.UTC))


def test_dev_generate_command(data_dir: Path) -> None:
    target = data_dir / "sample"
    args = ["dev", "generate", "--data-dir", str(target), "--rows", "50", "--months", "2"]
    result = CliRunner().invoke(mantis, [*args, "--end", "2026-02", "--workflows", "3"])
    assert result.exit_code == 0, result.output
    assert sorted(lines_of(target)) == ["2026-01", "2026-02"]
    again = CliRunner().invoke(mantis, [*args, "--end", "2026-02"])
    assert again.exit_code == 1 and "exists" in again.output
    bad = CliRunner().invoke(mantis, [*args, "--end", "2026-13"])
    assert bad.exit_code == 2 and "not a month" in bad.output


# ---------------------------------------------------------------- a planted regression

SLOW_SINCE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def rows_of(chunks: list[tuple[str, bytes]]) -> list[dict[str, object]]:
    return [json.loads(line) for _, chunk in chunks for line in chunk.splitlines()]


def test_slowdown_touches_one_bucket_of_one_workflow_from_its_date_only() -> None:
    common = {"rows": 600, "months": 3, "workflows": 3, "seed": 4, "end": END}
    plain = rows_of(list(sample_chunks(**common)))
    slowed_wf = workflow_ids(3)[1]
    slow = rows_of(
        list(
            sample_chunks(
                **common,
                slow_bucket="settle",
                slow_factor=1.5,
                slow_since=SLOW_SINCE,
                slow_workflow=slowed_wf,
            )
        )
    )
    assert len(plain) == len(slow)
    changed = 0
    for before, after in zip(plain, slow, strict=True):
        hit = after["workflow_id"] == slowed_wf and str(after["finished_at"]) >= "2026-03-01"
        b_breakdown, a_breakdown = before["wall_time_breakdown"], after["wall_time_breakdown"]
        assert isinstance(b_breakdown, dict) and isinstance(a_breakdown, dict)
        for bucket in BUCKETS:
            expected = b_breakdown[bucket] * (1.5 if hit and bucket == "settle" else 1.0)
            assert a_breakdown[bucket] == pytest.approx(expected, abs=0.002)
        if hit:
            changed += 1
            assert after["total_time_s"] > before["total_time_s"]
        else:
            assert after == before  # the same draws: everything else is byte for byte the same
    assert changed > 20


def test_slowdown_options_are_checked() -> None:
    def chunks(**options: object) -> None:
        list(sample_chunks(rows=10, months=1, workflows=2, end=END, **options))

    with pytest.raises(ValueError, match="not one of"):
        chunks(slow_bucket="thinking")
    with pytest.raises(ValueError, match="positive"):
        chunks(slow_bucket="settle", slow_factor=0.0)
    with pytest.raises(ValueError, match="workflows"):
        chunks(slow_bucket="settle", slow_workflow="default__nobody-v1")
    with pytest.raises(ValueError, match="need a slow_bucket"):
        chunks(slow_since=SLOW_SINCE)


def test_dev_generate_plants_a_slowdown(data_dir: Path) -> None:
    target = data_dir / "slow"
    args = ["dev", "generate", "--data-dir", str(target), "--rows", "300", "--months", "2"]
    args += ["--end", "2026-03", "--workflows", "2", "--seed", "4"]
    slow = ["--slow-bucket", "act", "--slow-factor", "2", "--slow-since", "14d"]
    result = CliRunner().invoke(mantis, [*args, *slow])
    assert result.exit_code == 0, result.output
    # a duration counts back from the end of the data (2026-04-01), not from now
    assert "planted: act x2 from 2026-03-18 00:00:00Z in every workflow" in result.output
    rows = [json.loads(line) for lines in lines_of(target).values() for line in lines]
    plain = rows_of(list(sample_chunks(rows=300, months=2, workflows=2, seed=4, end=END)))
    for before, after in zip(plain, rows, strict=True):
        factor = 2.0 if after["finished_at"] >= "2026-03-18" else 1.0
        expected = before["wall_time_breakdown"]["act"] * factor
        assert after["wall_time_breakdown"]["act"] == pytest.approx(expected, abs=0.002)
    bad = CliRunner().invoke(mantis, [*args, "--slow-bucket", "nap"])
    assert bad.exit_code == 2
    orphan = CliRunner().invoke(mantis, [*args, "--slow-since", "2026-03-01"])
    assert orphan.exit_code == 2 and "need --slow-bucket" in orphan.output
