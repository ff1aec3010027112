"""Time windows: `--since`/`--until` as durations or dates, their edges, shard pruning."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from mantisd.cli import mantis
from mantisd.stats.durations import TimeBound, TimeBoundType, format_instant, window_phrase
from mantisd.stats.query import StatsQuery, select, select_many
from tests.rows import utc
from tests.stats_data import GOLDEN, line, write_shard

NOW = dt.datetime(2026, 11, 28, 6, 30, tzinfo=dt.UTC)
UTC = dt.UTC


def convert(text: str) -> TimeBound:
    return TimeBoundType().convert(text, None, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - dt.timedelta(days=7)),
        ("24h", NOW - dt.timedelta(hours=24)),
        ("30m", NOW - dt.timedelta(minutes=30)),
        ("2w", NOW - dt.timedelta(weeks=2)),
        ("90s", NOW - dt.timedelta(seconds=90)),
        ("2026-10-01", dt.datetime(2026, 10, 1, tzinfo=UTC)),
        ("2026-10-01T12:30:00Z", dt.datetime(2026, 10, 1, 12, 30, tzinfo=UTC)),
        ("2026-10-01t12:30:00z", dt.datetime(2026, 10, 1, 12, 30, tzinfo=UTC)),
        ("2026-10-01T12:30:00+02:00", dt.datetime(2026, 10, 1, 10, 30, tzinfo=UTC)),
        ("2026-10-01T12:30:00.250-05:00", dt.datetime(2026, 10, 1, 17, 30, 0, 250000, UTC)),
        ("2026-10-01T12:30", dt.datetime(2026, 10, 1, 12, 30, tzinfo=UTC)),  # naive: UTC
        ("2026-10-01 12:30:05", dt.datetime(2026, 10, 1, 12, 30, 5, tzinfo=UTC)),
        ("99999999d", dt.datetime.min.replace(tzinfo=UTC)),  # before anything was logged
    ],
)
def test_a_bound_is_a_duration_ago_or_an_instant(text: str, expected: dt.datetime) -> None:
    bound = convert(text)
    assert bound.resolve(NOW) == expected
    assert bound.relative == (text[-1] in "wdhms")
    assert bound.text == text


@pytest.mark.parametrize(
    "text",
    ["7x", "0d", "-1d", "d", "1.5d", "2026-13-01", "2026-02-30", "2026-10-01T25:00", "10/01/2026"]
    + ["2026-10-01T12", "2026-10-01T12:00:00+0200", "yesterday", "", "2026-W40"],
)
def test_bad_bounds_are_refused_with_both_forms_named(text: str) -> None:
    with pytest.raises(click.BadParameter) as error:
        convert(text)
    message = str(error.value)
    assert f"{text!r} is not a duration like 7d" in message
    assert "2026-10-01T12:00:00Z" in message


def test_window_phrases() -> None:
    since, until = convert("7d"), convert("2026-11-01")
    assert window_phrase(None, None) == ""
    assert window_phrase(since, None) == " in the last 7d"
    assert window_phrase(convert("2026-10-01"), None) == " since 2026-10-01"
    assert window_phrase(None, until) == " before 2026-11-01"
    assert window_phrase(None, convert("7d")) == " before 7d ago"
    assert window_phrase(convert("2026-10-01"), until) == " between 2026-10-01 and 2026-11-01"
    assert window_phrase(convert("14d"), since) == " between 14d ago and 7d ago"


def test_instants_are_shown_as_briefly_as_they_allow() -> None:
    assert format_instant(dt.datetime(2026, 10, 1, tzinfo=UTC)) == "2026-10-01"
    assert format_instant(dt.datetime(2026, 10, 1, 12, 5, tzinfo=UTC)) == "2026-10-01 12:05Z"
    assert format_instant(dt.datetime(2026, 10, 1, 12, 5, 7, 9, UTC)) == "2026-10-01 12:05:07Z"


# ---------------------------------------------------------------- stats with a window


def run_at(finished: dt.datetime, think: float, **extra: object) -> bytes:
    return line(
        workflow_id=GOLDEN,
        finished_at=utc(finished),
        created_at=utc(finished - dt.timedelta(seconds=30)),
        wall_time_breakdown={"think": think},
        **extra,
    )


@pytest.fixture
def edges_dir(data_dir: Path) -> Path:
    """Runs on both sides of 2026-10-01 and 2026-11-01 (UTC), some exactly on them."""
    at = dt.datetime
    write_shard(
        data_dir,
        "2026-09",
        [
            run_at(at(2026, 9, 15, tzinfo=UTC), 1.0),
            run_at(at(2026, 9, 30, 23, 59, 59, 999999, tzinfo=UTC), 2.0),
        ],
    )
    write_shard(
        data_dir,
        "2026-10",
        [
            run_at(at(2026, 10, 1, tzinfo=UTC), 10.0),  # exactly on since: inside
            run_at(at(2026, 10, 15, tzinfo=UTC), 20.0),
            run_at(at(2026, 10, 31, 23, 59, 59, tzinfo=UTC), 30.0),
        ],
    )
    write_shard(
        data_dir,
        "2026-11",
        [
            run_at(at(2026, 11, 1, tzinfo=UTC), 100.0),  # exactly on until: outside
            run_at(at(2026, 11, 2, tzinfo=UTC), 200.0),
        ],
    )
    return data_dir


def stats(data_dir: Path, *args: str) -> Result:
    runner = CliRunner(env={"MANTIS_DATA_DIR": None})
    return runner.invoke(
        mantis, ["runs", "stats", GOLDEN, "--data-dir", str(data_dir), "--json", *args]
    )


def think_values(result: Result) -> tuple[int, float | None]:
    assert result.exit_code in (0, 1), result.output
    document = json.loads(result.stdout)
    p50 = document["percentiles"].get("think", {}).get("p50")
    return document["run_count"], p50


def test_since_is_inclusive_and_until_exclusive(edges_dir: Path) -> None:
    window = ["--since", "2026-10-01", "--until", "2026-11-01T00:00:00Z"]
    assert think_values(stats(edges_dir, *window)) == (3, 20.0)  # 10, 20, 30
    # one microsecond later on each side: the run on since drops out, the one on until comes in
    later = ["--since", "2026-10-01T00:00:00.000001Z", "--until", "2026-11-01T00:00:00.000001Z"]
    assert think_values(stats(edges_dir, *later)) == (3, 30.0)  # 20, 30, 100


def test_until_in_another_zone(edges_dir: Path) -> None:
    # 2026-11-01T01:00+01:00 is midnight UTC: the run on it is outside
    result = stats(edges_dir, "--since", "2026-10-01", "--until", "2026-11-01T01:00:00+01:00")
    assert think_values(result) == (3, 20.0)


def test_window_across_month_shards(edges_dir: Path) -> None:
    result = stats(edges_dir, "--since", "2026-09-30T12:00:00Z", "--until", "2026-11-01T12:00Z")
    assert think_values(result) == (5, 20.0)  # 2, 10, 20, 30, 100


def test_until_alone(edges_dir: Path) -> None:
    assert think_values(stats(edges_dir, "--until", "2026-10-01")) == (2, 1.5)


def test_header_names_the_window(edges_dir: Path) -> None:
    runner = CliRunner(env={"MANTIS_DATA_DIR": None})
    args = ["runs", "stats", GOLDEN, "--data-dir", str(edges_dir)]
    between = runner.invoke(mantis, [*args, "--since", "2026-10-01", "--until", "2026-11-01"])
    assert between.stdout.splitlines()[0] == (
        f"Across last 3 succeeded runs of {GOLDEN} between 2026-10-01 and 2026-11-01:"
    )
    before = runner.invoke(mantis, [*args, "--until", "2026-10-01"])
    assert before.stdout.splitlines()[0].endswith(" before 2026-10-01:")
    since = runner.invoke(mantis, [*args, "--since", "2026-10-01"])
    assert since.stdout.splitlines()[0].endswith(" since 2026-10-01:")


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["--since", "2026-11-01", "--until", "2026-10-01"], "(2026-11-01) is not before"),
        (["--since", "2026-11-01", "--until", "2026-11-01"], "(2026-11-01) is not before"),
        (["--since", "7d", "--until", "8d"], "is not before --until"),
    ],
)
def test_empty_window_is_a_usage_error(edges_dir: Path, args: list[str], shown: str) -> None:
    result = stats(edges_dir, *args)
    assert result.exit_code == 2
    assert "empty window: --since" in result.stderr and shown in result.stderr
    assert "Usage: mantis runs stats" in result.stderr


def test_a_window_without_runs_says_so(edges_dir: Path) -> None:
    result = stats(edges_dir, "--since", "2026-10-02", "--until", "2026-10-03")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["run_count"] == 0
    assert f"no succeeded runs of {GOLDEN} between 2026-10-02 and 2026-10-03" in result.stderr
    ancient = stats(edges_dir, "--until", "99999999d")
    assert ancient.exit_code == 1 and "before 99999999d ago" in ancient.stderr


def test_until_never_opens_newer_shards(edges_dir: Path) -> None:
    until = dt.datetime(2026, 11, 1, tzinfo=UTC)  # the November shard cannot hold a run
    query = StatsQuery(GOLDEN, last=100, until=until, since=dt.datetime(2026, 10, 1, tzinfo=UTC))
    selection = select(edges_dir, query, workers=1)
    assert selection.run_count == 3
    assert selection.report.shards_read == 1
    later = select(edges_dir, StatsQuery(GOLDEN, last=100, until=until + dt.timedelta(seconds=1)))
    assert later.report.shards_read == 3


def test_last_counts_within_the_window(edges_dir: Path) -> None:
    # the two newest runs before November, not the two newest runs of the log
    result = stats(edges_dir, "--until", "2026-11-01", "--last", "2")
    assert think_values(result) == (2, 25.0)


# ---------------------------------------------------------------- several windows at once


def test_select_many_equals_select_one_by_one(data_dir: Path) -> None:
    rng = random.Random(3)
    for month in ("2026-08", "2026-09", "2026-10"):
        start = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
        write_shard(
            data_dir,
            month,
            [
                run_at(start + dt.timedelta(hours=7 * i), round(rng.uniform(1, 100), 3))
                for i in range(100)
            ],
        )
    at = dt.datetime
    queries = [
        StatsQuery(
            GOLDEN, last=10**9, since=at(2026, 8, 20, tzinfo=UTC), until=at(2026, 9, 20, tzinfo=UTC)
        ),
        StatsQuery(
            GOLDEN,
            last=10**9,
            since=at(2026, 9, 20, tzinfo=UTC),
            until=at(2026, 10, 20, tzinfo=UTC),
        ),
    ]
    for workers in (1, 2):
        many = select_many(data_dir, queries, workers=workers)
        one_by_one = [select(data_dir, q, workers=workers) for q in queries]
        for a, b in zip(many, one_by_one, strict=True):
            assert a.run_count == b.run_count > 50
            assert {k: a.values(k) for k in a.sorted_runs} == {
                k: b.values(k) for k in b.sorted_runs
            }
    small = [StatsQuery(GOLDEN, last=5, until=q.until) for q in queries]
    assert [s.run_count for s in select_many(data_dir, small)] == [5, 5]
