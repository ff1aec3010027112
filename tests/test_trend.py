"""`mantis runs trend`: calendar periods, one pass split by period, table, bars and JSON."""

from __future__ import annotations

import datetime as dt
import json
import random
import statistics
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from mantisd.cli import mantis
from mantisd.sample import generate, workflow_ids
from mantisd.stats import trend as periods
from mantisd.stats.query import StatsQuery, select, select_periods
from mantisd.stats.render_trend import bar
from tests.rows import utc
from tests.stats_data import GOLDEN, line, write_shard

UTC = dt.UTC


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


# ---------------------------------------------------------------- periods


@pytest.mark.parametrize(
    ("instant", "every", "start"),
    [
        (at(2026, 11, 28, 6, 30), "1d", at(2026, 11, 28)),
        (at(2026, 11, 28, 6, 30), "1w", at(2026, 11, 23)),  # a Saturday: Monday before
        (at(2026, 11, 23), "1w", at(2026, 11, 23)),  # a Monday at midnight: itself
        (at(2026, 1, 1, 12), "1w", at(2025, 12, 29)),  # ISO week 1 of 2026 starts in 2025
        (at(2026, 11, 28, 6, 30), "1mo", at(2026, 11, 1)),
        (dt.datetime(2026, 11, 1, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))), "1mo",
         at(2026, 10, 1)),  # 22:30 UTC on Oct 31
    ],
)  # fmt: skip
def test_floor_aligns_to_utc_days_iso_weeks_and_months(
    instant: dt.datetime, every: str, start: dt.datetime
) -> None:
    assert periods.floor(instant, every) == start


def test_month_periods_have_their_calendar_lengths() -> None:
    bounds = periods.edges(at(2027, 12, 15), at(2028, 4, 1), "1mo")
    assert bounds == [
        at(2027, 12, 1),
        at(2028, 1, 1),
        at(2028, 2, 1),
        at(2028, 3, 1),
        at(2028, 4, 1),
    ]
    lengths = [(b - a).days for a, b in zip(bounds, bounds[1:], strict=False)]
    assert lengths == [31, 31, 29, 31]  # 2028 is a leap year


def test_edges_cover_the_window() -> None:
    assert periods.edges(at(2026, 11, 25, 12), at(2026, 11, 27), "1d") == [
        at(2026, 11, 25),
        at(2026, 11, 26),
        at(2026, 11, 27),
    ]
    weeks = periods.edges(at(2026, 11, 1), at(2026, 11, 28, 6), "1w")
    assert weeks[0] == at(2026, 10, 26) and weeks[-1] == at(2026, 11, 30) and len(weeks) == 6
    with pytest.raises(ValueError):
        periods.edges(at(2026, 11, 2), at(2026, 11, 1), "1d")


@pytest.mark.parametrize(
    ("every", "since"),
    [("1d", at(2026, 11, 17)), ("1w", at(2026, 9, 7)), ("1mo", at(2025, 12, 1))],
)
def test_default_since_shows_twelve_periods(every: str, since: dt.datetime) -> None:
    until = at(2026, 11, 28, 6, 30)
    assert periods.default_since(until, every) == since
    assert len(periods.edges(since, until, every)) - 1 == 12
    # a window ending exactly on an edge: the last period is the one before it
    assert periods.default_since(at(2026, 12, 1), "1mo") == at(2025, 12, 1)


def test_bar_is_drawn_in_eighths() -> None:
    assert bar(10.0, 10.0, width=4) == "████"
    assert bar(5.0, 10.0, width=4) == "██"
    assert bar(1.0, 10.0, width=4) == "▍"  # 3.2 eighths -> 3
    assert bar(9.0, 10.0, width=4) == "███▋"  # 28.8 eighths -> 29 = 3 full + 5
    assert bar(0.0, 10.0) == "" and bar(1.0, 0.0) == ""


# ---------------------------------------------------------------- one pass, split by period


def test_select_periods_equals_one_select_per_period(data_dir: Path) -> None:
    rng = random.Random(8)
    for month in ("2026-08", "2026-09", "2026-10"):
        start = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
        rows = []
        for i in range(120):
            finished = start + dt.timedelta(hours=6 * i, seconds=rng.randrange(3600))
            if finished.month != start.month:
                break
            rows.append(run_at(finished, think=round(rng.uniform(1, 50), 3)))
        write_shard(data_dir, month, rows)
    since, until = at(2026, 8, 20, 7), at(2026, 10, 9, 13)
    bounds = periods.edges(since, until, "1w")
    query = StatsQuery(GOLDEN, status=None, since=since, until=until)
    for workers in (1, 2):
        selections, report = select_periods(data_dir, query, bounds, workers=workers)
        assert report.shards_read == 3 and report.bad_lines == 0
        for i, selection in enumerate(selections):
            low, high = max(bounds[i], since), min(bounds[i + 1], until)
            one = select(
                data_dir, StatsQuery(GOLDEN, last=10**6, status=None, since=low, until=high)
            )
            assert selection.run_count == one.run_count
            assert selection.values("think") == one.values("think")
    assert sum(s.run_count for s in selections) > 150


# ---------------------------------------------------------------- the command


def run_at(finished: dt.datetime, **breakdown: float) -> bytes:
    return line(
        workflow_id=GOLDEN,
        finished_at=utc(finished),
        created_at=utc(finished - dt.timedelta(seconds=30)),
        wall_time_breakdown=breakdown or {"think": 1.0},
    )


def trend(data_dir: Path, *args: str, workflow: str = GOLDEN) -> Result:
    runner = CliRunner(env={"MANTIS_DATA_DIR": None})
    return runner.invoke(mantis, ["runs", "trend", workflow, "--data-dir", str(data_dir), *args])


def document(result: Result) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@pytest.fixture
def weeks_dir(data_dir: Path) -> Path:
    """Runs in the weeks of Oct 5 and Oct 19 2026 (none in the week of Oct 12), and Nov 2."""
    write_shard(
        data_dir,
        "2026-10",
        [
            run_at(at(2026, 10, 5), think=10.0),  # Monday midnight: the week of Oct 5
            run_at(at(2026, 10, 11, 23, 59, 59), think=20.0),  # Sunday night: still that week
            run_at(at(2026, 10, 19, 12), think=40.0),
            run_at(at(2026, 10, 31, 23), think=60.0),
        ],
    )
    write_shard(data_dir, "2026-11", [run_at(at(2026, 11, 2, 1), think=80.0)])
    return data_dir


def test_weekly_json_with_an_empty_week(weeks_dir: Path) -> None:
    args = ["--bucket", "think", "--since", "2026-10-05", "--until", "2026-11-09", "--json"]
    result = trend(weeks_dir, *args)
    assert result.exit_code == 0, result.output
    doc = document(result)
    assert list(doc) == [
        "workflow_id",
        "status",
        "bucket",
        "every",
        "since",
        "until",
        "run_count",
        "periods",
    ]
    assert doc["every"] == "1w" and doc["bucket"] == "think" and doc["run_count"] == 5
    assert doc["since"] == "2026-10-05T00:00:00Z" and doc["until"] == "2026-11-09T00:00:00Z"
    assert [(p["start"][:10], p["n"], p["p50"]) for p in doc["periods"]] == [
        ("2026-10-05", 2, 15.0),
        ("2026-10-12", 0, None),
        ("2026-10-19", 1, 40.0),
        ("2026-10-26", 1, 60.0),
        ("2026-11-02", 1, 80.0),
    ]
    week = doc["periods"][0]
    assert week == {
        "start": "2026-10-05T00:00:00Z",
        "end": "2026-10-12T00:00:00Z",
        "n": 2,
        "p50": 15.0,
        "p95": 19.5,
        "p99": 19.9,
        "partial": False,
    }
    assert doc["periods"][1] | {"start": "", "end": ""} == {
        "start": "",
        "end": "",
        "n": 0,
        "p50": None,
        "p95": None,
        "p99": None,
        "partial": False,
    }


def test_weekly_table(weeks_dir: Path) -> None:
    args = ["--bucket", "think", "--since", "2026-10-05", "--until", "2026-11-04"]
    result = trend(weeks_dir, *args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"think of succeeded runs of {GOLDEN}, weekly, from 2026-10-05 to 2026-11-04:"
    )
    assert lines[2].split()[:6] == ["week", "of", "n", "p50", "p95", "p99"]
    assert lines[2].endswith("p50 bar (full: 80.0s)")
    rows = lines[4:9]
    assert [r.split()[:3] for r in rows] == [
        ["2026-10-05", "2", "15.0s"],
        ["2026-10-12", "0", "-"],
        ["2026-10-19", "1", "40.0s"],
        ["2026-10-26", "1", "60.0s"],
        ["2026-11-02*", "1", "80.0s"],  # the window ends on Wednesday: a partial week
    ]
    assert rows[1].rstrip().endswith("-")  # no bar for an empty week
    assert rows[4].endswith("█" * 30)
    assert rows[2].endswith("█" * 15)  # 40 of 80: half the bar
    assert lines[-1] == "* partial period: the window covers only part of it"


def test_monthly_and_daily_periods(weeks_dir: Path) -> None:
    monthly = document(trend(weeks_dir, "--bucket", "think", "--every", "1mo", "--json",
                             "--since", "2026-09-15", "--until", "2026-12-01"))  # fmt: skip
    assert [(p["start"][:10], p["end"][:10], p["n"], p["partial"]) for p in monthly["periods"]] == [
        ("2026-09-01", "2026-10-01", 0, True),
        ("2026-10-01", "2026-11-01", 4, False),
        ("2026-11-01", "2026-12-01", 1, False),
    ]
    daily = document(trend(weeks_dir, "--every", "1d", "--json",
                           "--since", "2026-10-31T12:00:00Z", "--until", "2026-11-03"))  # fmt: skip
    assert [(p["start"], p["n"]) for p in daily["periods"]] == [
        ("2026-10-31T00:00:00Z", 1),
        ("2026-11-01T00:00:00Z", 0),
        ("2026-11-02T00:00:00Z", 1),
    ]
    assert daily["bucket"] == "total_time_s"  # the default


def test_default_window_is_twelve_weeks_up_to_now(data_dir: Path) -> None:
    now = dt.datetime.now(UTC)
    finished = now - dt.timedelta(days=3)
    write_shard(data_dir, finished.strftime("%Y-%m"), [run_at(finished.replace(microsecond=0))])
    doc = document(trend(data_dir, "--json"))
    assert len(doc["periods"]) == 12 and doc["every"] == "1w"
    assert doc["periods"][-1]["partial"] is True  # the window ends now, inside its week
    assert doc["run_count"] == 1


def test_default_window_counts_rows_from_clocks_running_ahead(data_dir: Path) -> None:
    """The store takes `finished_at` up to a day ahead of its clock: without --until, such a
    run is in the last period, as `stats` counts it."""
    ahead = (dt.datetime.now(UTC) + dt.timedelta(hours=2)).replace(microsecond=0)
    write_shard(data_dir, ahead.strftime("%Y-%m"), [run_at(ahead)])
    doc = document(trend(data_dir, "--json"))
    assert doc["run_count"] == 1 and doc["periods"][-1]["n"] == 1
    until_now = document(trend(data_dir, "--json", "--until", utc(dt.datetime.now(UTC))))
    assert until_now["run_count"] == 0  # an explicit --until is exclusive, as documented


def test_trend_shows_when_a_slowdown_started(data_dir: Path) -> None:
    workflow = workflow_ids(2)[0]
    generate(
        data_dir,
        rows=6000,
        months=2,
        workflows=2,
        seed=11,
        end=at(2026, 11, 1),
        slow_bucket="load",
        slow_factor=1.3,
        slow_since=at(2026, 10, 19),
        slow_workflow=workflow,
    )
    args = ["--bucket", "load", "--since", "2026-09-07", "--until", "2026-11-02", "--json"]
    weeks = document(trend(data_dir, *args, workflow=workflow))["periods"]
    p50 = {p["start"][:10]: p["p50"] for p in weeks}
    before = [v for k, v in p50.items() if k < "2026-10-19"]
    after = [v for k, v in p50.items() if k >= "2026-10-19" and v is not None]
    assert len(before) == 6 and len(after) == 2
    assert min(after) > max(before)  # the jump is in the week of Oct 19, not before
    assert min(after) > 1.2 * statistics.median(before)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--every", "3x"], "'3x' is not one of '1d', '1w', '1mo'"),
        (["--every", "2w"], "'2w' is not one of"),
        (["--bucket", "nap"], "'nap': neither one of the nine"),
        (["--since", "2026-11-01", "--until", "2026-10-01"], "empty window: --since"),
        (["--since", "99999d", "--every", "1d"], "at most 1000"),
        (["--until", "soon"], "'soon' is not a duration"),
    ],
)
def test_bad_flags_are_usage_errors(weeks_dir: Path, args: list[str], message: str) -> None:
    result = trend(weeks_dir, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Usage: mantis runs trend" in result.stderr


def test_no_runs_is_exit_1_with_the_json_still_printed(weeks_dir: Path) -> None:
    args = ["--since", "2026-10-12", "--until", "2026-10-19", "--json"]
    result = trend(weeks_dir, *args)
    assert result.exit_code == 1
    doc = document(result)
    assert doc["run_count"] == 0 and [p["n"] for p in doc["periods"]] == [0]
    assert f"no succeeded runs of {GOLDEN} from 2026-10-12 to 2026-10-19" in result.stderr
    plain = trend(weeks_dir, *args[:-1])
    assert plain.exit_code == 1 and plain.stdout == ""


def test_a_run_logged_in_two_shards_counts_once_in_the_newer_one(data_dir: Path) -> None:
    def copy(finished: dt.datetime, think: float) -> bytes:
        return line(
            workflow_id=GOLDEN,
            run_id="the-same-run",
            finished_at=utc(finished),
            created_at=utc(finished - dt.timedelta(seconds=30)),
            wall_time_breakdown={"think": think},
        )

    write_shard(data_dir, "2026-09", [copy(at(2026, 9, 30, 23), 1.0)])
    write_shard(data_dir, "2026-10", [copy(at(2026, 10, 1, 1), 2.0), run_at(at(2026, 10, 2))])
    bounds = periods.edges(at(2026, 9, 1), at(2026, 11, 1), "1mo")
    for workers in (1, 2):
        selections, report = select_periods(data_dir, StatsQuery(GOLDEN), bounds, workers=workers)
        assert [s.run_count for s in selections] == [0, 2]
        assert selections[1].values("think") == [1.0, 2.0]  # the copy of October's shard
        assert report.duplicates == 1
