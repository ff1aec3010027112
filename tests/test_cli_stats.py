"""`mantis runs stats` through click's CliRunner: golden output, every flag, bad input."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mantisd.cli import mantis
from mantisd.stats.render import render_table
from mantisd.stats.summary import BucketStats
from tests.rows import utc
from tests.stats_data import GOLDEN, golden_run, line, write_golden, write_shard

# Written by hand from the golden runs (run k spends base * k seconds per bucket): with five
# runs, p50 is run 3, p95 is run 4 + 0.8 of the way to run 5, p99 run 4 + 0.96 of the way.
GOLDEN_TABLE = """\
Across last 5 succeeded runs of default__golden-v1:

bucket                  p50        p95        p99
──────────────────────────────────────────────────
claude_extract         90.0s     144.0s     148.8s
think                  60.0s      96.0s      99.2s
settle                 30.0s      48.0s      49.6s
claude_ground          15.0s      24.0s      24.8s
perceive               12.0s      19.2s      19.8s
load                    9.0s      14.4s      14.9s
act                     6.0s       9.6s       9.9s
claude_verify           3.0s       4.8s       5.0s
overhead                1.5s       2.4s       2.5s
──────────────────────────────────────────────────
total_time_s          240.0s     384.0s     396.8s
"""

GOLDEN_JSON = {
    "workflow_id": "default__golden-v1",
    "run_count": 5,
    "percentiles": {
        "claude_extract": {"p50": 90.0, "p95": 144.0, "p99": 148.8},
        "think": {"p50": 60.0, "p95": 96.0, "p99": 99.2},
        "settle": {"p50": 30.0, "p95": 48.0, "p99": 49.6},
        "claude_ground": {"p50": 15.0, "p95": 24.0, "p99": 24.8},
        "perceive": {"p50": 12.0, "p95": 19.2, "p99": 19.84},
        "load": {"p50": 9.0, "p95": 14.4, "p99": 14.88},
        "act": {"p50": 6.0, "p95": 9.6, "p99": 9.92},
        "claude_verify": {"p50": 3.0, "p95": 4.8, "p99": 4.96},
        "overhead": {"p50": 1.5, "p95": 2.4, "p99": 2.48},
        "total_time_s": {"p50": 240.0, "p95": 384.0, "p99": 396.8},
    },
}

# The reference page's example, copied verbatim.
PAGE_TABLE = """\
bucket                  p50        p95        p99
──────────────────────────────────────────────────
think                  92.0s     145.0s     201.0s
claude_extract         67.0s     128.0s     156.0s
settle                 28.0s      44.0s      55.0s
claude_ground          18.0s      31.0s      42.0s
perceive               11.0s      18.0s      22.0s
load                   10.0s      19.0s      28.0s
act                     6.0s       9.0s      12.0s
claude_verify           4.0s       7.0s       9.0s
overhead                2.0s       4.0s       5.0s
──────────────────────────────────────────────────
total_time_s          238.0s     383.0s     478.0s
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"MANTIS_DATA_DIR": None})


@pytest.fixture
def golden_dir(data_dir: Path) -> Path:
    write_golden(data_dir)
    return data_dir


def stats(runner: CliRunner, data_dir: Path, *args: str) -> Result:
    return runner.invoke(mantis, ["runs", "stats", *args, "--data-dir", str(data_dir)])


def table_rows(result: Result) -> dict[str, list[str]]:
    """Bucket -> its three cells, from a table on stdout."""
    rows = {}
    for text in result.stdout.splitlines()[4:]:
        if text and not text.startswith("─"):
            name, *cells = text.split()
            rows[name] = cells
    return rows


def test_golden_table(runner: CliRunner, golden_dir: Path) -> None:
    result = stats(runner, golden_dir, GOLDEN)
    assert result.exit_code == 0, result.output
    assert result.stdout == GOLDEN_TABLE
    assert result.stderr == ""


def test_golden_json(runner: CliRunner, golden_dir: Path) -> None:
    result = stats(runner, golden_dir, GOLDEN, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document == GOLDEN_JSON
    assert list(document["percentiles"]) == list(GOLDEN_JSON["percentiles"])  # order too


def test_layout_reproduces_the_page_example_exactly() -> None:
    page = [
        ("think", (92, 145, 201)),
        ("claude_extract", (67, 128, 156)),
        ("settle", (28, 44, 55)),
        ("claude_ground", (18, 31, 42)),
        ("perceive", (11, 18, 22)),
        ("load", (10, 19, 28)),
        ("act", (6, 9, 12)),
        ("claude_verify", (4, 7, 9)),
        ("overhead", (2, 4, 5)),
        ("total_time_s", (238, 383, 478)),
    ]
    stats_ = [BucketStats(name, tuple(map(float, values))) for name, values in page]
    assert render_table(stats_) == PAGE_TABLE


def test_long_names_and_numbers_widen_their_columns() -> None:
    text = render_table(
        [
            BucketStats("a_very_long_custom_bucket_name", (1.0, 2.0, 3.0)),
            BucketStats("total_time_s", (123456789.0, 2.0, 3.0)),
        ]
    )
    widths = {len(t) for t in text.splitlines()[1:]}
    assert len(widths) == 1
    assert "a_very_long_custom_bucket_name  " in text and " 123456789.0s" in text


def test_last_takes_the_most_recently_logged_runs(runner: CliRunner, golden_dir: Path) -> None:
    result = stats(runner, golden_dir, GOLDEN, "--last", "2", "--json")
    document = json.loads(result.stdout)
    assert document["run_count"] == 2
    # runs 4 and 5 were logged last: think is 80 and 100
    assert document["percentiles"]["think"]["p50"] == 90.0
    text = stats(runner, golden_dir, GOLDEN, "--last", "1")
    assert text.stdout.startswith("Across last 1 succeeded run of default__golden-v1:\n\n")
    assert table_rows(text)["think"] == ["100.0s"] * 3


def test_log_order_wins_over_finished_at(runner: CliRunner, data_dir: Path) -> None:
    # the last line finished earliest (a slow pod clock): it is still the most recent run
    write_shard(data_dir, "2026-05", [golden_run(5), golden_run(1)])
    result = stats(runner, data_dir, GOLDEN, "--last", "1", "--json")
    assert json.loads(result.stdout)["percentiles"]["think"]["p50"] == 20.0


def test_status_failed(runner: CliRunner, golden_dir: Path) -> None:
    result = stats(runner, golden_dir, GOLDEN, "--status", "failed")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Across last 1 failed run of default__golden-v1:\n\n")
    assert table_rows(result) == {"think": ["500.0s"] * 3, "total_time_s": ["720.0s"] * 3}
    # the failed run reports one bucket only: the others are over 0 of 1 runs, so not shown


def test_status_empty_means_every_terminal_status(runner: CliRunner, golden_dir: Path) -> None:
    result = stats(runner, golden_dir, GOLDEN, "--status", "")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Across last 6 runs of default__golden-v1:\n\n")
    assert table_rows(result)["think"][0] == "70.0s"  # 20, 40, 60, 80, 100, 500
    assert "claude_extract (5 of 6)" in result.stderr  # the failed run has no claude_extract


def test_repeated_bucket_restricts_the_table(runner: CliRunner, golden_dir: Path) -> None:
    result = stats(runner, golden_dir, GOLDEN, "--bucket", "settle", "--bucket", "think")
    assert result.exit_code == 0, result.output
    assert list(table_rows(result)) == ["think", "settle", "total_time_s"]
    as_json = stats(runner, golden_dir, GOLDEN, "--bucket", "act", "--json")
    assert list(json.loads(as_json.stdout)["percentiles"]) == ["act", "total_time_s"]
    total_only = stats(runner, golden_dir, GOLDEN, "--bucket", "total_time_s")
    assert list(table_rows(total_only)) == ["total_time_s"]


def test_known_bucket_nobody_reported_is_shown_empty(runner: CliRunner, data_dir: Path) -> None:
    write_shard(data_dir, "2026-05", [golden_run(1, wall_time_breakdown={"think": 1.0})])
    result = stats(runner, data_dir, GOLDEN, "--bucket", "overhead", "--bucket", "think")
    assert result.exit_code == 0, result.output
    assert table_rows(result)["overhead"] == ["-", "-", "-"]
    document = json.loads(stats(runner, data_dir, GOLDEN, "--bucket", "overhead", "--json").stdout)
    assert document["percentiles"]["overhead"] == {"p50": None, "p95": None, "p99": None}


def test_custom_bucket_is_shown_and_selectable(runner: CliRunner, data_dir: Path) -> None:
    write_shard(
        data_dir,
        "2026-05",
        [golden_run(1), golden_run(2, wall_time_breakdown={"think": 5.0, "gpu_warmup": 300.0})],
    )
    result = stats(runner, data_dir, GOLDEN)
    assert list(table_rows(result))[:3] == ["gpu_warmup", "claude_extract", "think"]
    assert table_rows(result)["think"][0] == "12.5s"
    assert "gpu_warmup (1 of 2)" in result.stderr
    only = stats(runner, data_dir, GOLDEN, "--bucket", "gpu_warmup", "--json")
    assert json.loads(only.stdout)["percentiles"]["gpu_warmup"]["p99"] == 300.0


def test_since_drops_older_runs_and_combines_with_last(runner: CliRunner, data_dir: Path) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def run(age: dt.timedelta, think: float) -> bytes:
        return line(
            workflow_id=GOLDEN,
            finished_at=utc(now - age),
            created_at=utc(now - age - dt.timedelta(seconds=10)),
            wall_time_breakdown={"think": think},
        )

    old = now - dt.timedelta(days=90)
    write_shard(data_dir, old.strftime("%Y-%m"), [run(dt.timedelta(days=90), 1000.0)])
    recent = [run(dt.timedelta(hours=h), float(h)) for h in (30, 20, 10, 2, 1)]
    for r in recent:  # a run 30 h ago may sit in last month's shard
        month = json.loads(r)["finished_at"][:7]
        write_shard(data_dir, month, [r])

    def think(*args: str) -> list[str]:
        result = stats(runner, data_dir, GOLDEN, "--bucket", "think", *args)
        assert result.exit_code == 0, result.output
        return table_rows(result)["think"]

    assert think("--last", "1000")[0] == "15.0s"  # all six: 1, 2, 10, 20, 30, 1000
    assert think("--since", "7d")[0] == "10.0s"  # five: 1, 2, 10, 20, 30
    assert think("--since", "24h")[0] == "6.0s"  # 1, 2, 10, 20
    assert think("--since", "24h", "--last", "2")[0] == "1.5s"  # 1 and 2, logged last
    assert think("--since", "90m")[0] == "1.0s"
    header = stats(runner, data_dir, GOLDEN, "--since", "24h").stdout.splitlines()[0]
    assert header == f"Across last 4 succeeded runs of {GOLDEN} in the last 24h:"
    none = stats(runner, data_dir, GOLDEN, "--since", "30m")
    assert none.exit_code == 1
    assert f"no succeeded runs of {GOLDEN} in the last 30m" in none.stderr


def test_data_dir_from_environment(golden_dir: Path) -> None:
    runner = CliRunner(env={"MANTIS_DATA_DIR": str(golden_dir)})
    result = runner.invoke(mantis, ["runs", "stats", GOLDEN])
    assert result.exit_code == 0 and result.stdout == GOLDEN_TABLE


def test_every_flag_together(runner: CliRunner, data_dir: Path) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    lines = [
        line(
            workflow_id=GOLDEN,
            status=status,
            finished_at=utc(now - dt.timedelta(minutes=m)),
            created_at=utc(now - dt.timedelta(minutes=m + 1)),
            wall_time_breakdown={"think": float(m), "act": 1.0},
        )
        for m, status in [(50, "succeeded"), (40, "failed"), (30, "succeeded"), (20, "failed")]
    ]
    for one in lines:
        write_shard(data_dir, json.loads(one)["finished_at"][:7], [one])
    args = ["--last", "2", "--bucket", "think", "--since", "45m", "--status", "", "--json"]
    document = json.loads(stats(runner, data_dir, GOLDEN, *args).stdout)
    assert document["run_count"] == 2
    assert list(document["percentiles"]) == ["think", "total_time_s"]
    assert document["percentiles"]["think"]["p50"] == 25.0  # runs of 20 and 30 minutes ago


# ---------------------------------------------------------------- bad input in the log


def test_torn_last_line_is_skipped_and_counted(runner: CliRunner, golden_dir: Path) -> None:
    torn = golden_run(6)[:-40]  # a crash mid-write: no closing brace, no newline
    write_shard(golden_dir, "2026-05", [], end=torn)
    result = stats(runner, golden_dir, GOLDEN)
    assert result.exit_code == 0
    assert result.stdout == GOLDEN_TABLE
    assert result.stderr == "warning: skipped 1 unreadable line(s)\n"


def test_bad_lines_are_skipped_and_counted(runner: CliRunner, data_dir: Path) -> None:
    bad = [
        b"\n",
        b"   \n",
        b'not json at all "' + GOLDEN.encode() + b'"\n',
        b'["' + GOLDEN.encode() + b'", 1, 2]\n',
        golden_run(7).replace(b'"total_time_s":560.0', b'"total_time_s":"slow"'),
        golden_run(8).replace(b'"status":"succeeded"', b'"status":"paused"'),
        golden_run(9).replace(b'"total_time_s":720.0', b'"total_time_s":-1'),
        golden_run(10).replace(b'"think":200.0', b'"think":null'),
        b"{}\n",  # an object, but without the workflow id: never a candidate
    ]
    write_golden(data_dir)
    write_shard(data_dir, "2026-05", bad)
    result = stats(runner, data_dir, GOLDEN)
    assert result.exit_code == 0, result.output
    assert result.stdout == GOLDEN_TABLE
    # lines that mention the workflow and are not valid rows are counted
    assert result.stderr == "warning: skipped 6 unreadable line(s)\n"


@pytest.mark.parametrize("window", [(), ("--since", "100000d"), ("--until", "2100-01-01")])
def test_rows_the_schema_refuses_are_skipped_whatever_the_flags(
    runner: CliRunner, golden_dir: Path, window: tuple[str, ...]
) -> None:
    """Invalid in a field the query does not aggregate (a zone-less or garbage timestamp, a
    missing key, a wrong type) is still invalid: a window that holds every run changes
    nothing."""
    no_tenant = json.loads(golden_run(9))
    del no_tenant["tenant_id"]
    invalid = [
        golden_run(7).replace(b'"finished_at":"2026-05-13T18:07:00Z"', b'"finished_at":"x"'),
        golden_run(8).replace(b'"created_at":"2026-05-13T18:03:00Z"', b'"created_at":"2026"'),
        json.dumps(no_tenant).encode() + b"\n",
        golden_run(10).replace(b'"viable":3', b'"viable":"3"'),
    ]
    write_shard(golden_dir, "2026-05", invalid)
    result = stats(runner, golden_dir, GOLDEN, *window)
    assert result.exit_code == 0, result.output
    header, table = result.stdout.split("\n", 1)
    assert header.startswith("Across last 5 succeeded runs of default__golden-v1")
    assert table == GOLDEN_TABLE.split("\n", 1)[1]
    assert result.stderr == "warning: skipped 4 unreadable line(s)\n"


def test_rows_written_by_other_tools_are_read(runner: CliRunner, data_dir: Path) -> None:
    spaced = json.dumps(json.loads(golden_run(1)))  # ", " and ": " separators
    escaped = golden_run(2).replace(b'"default__golden', b'"\\u0064efault__golden')
    write_shard(data_dir, "2026-05", [spaced.encode() + b"\n", escaped])
    document = json.loads(stats(runner, data_dir, GOLDEN, "--json").stdout)
    assert document["run_count"] == 2


def test_duplicate_run_ids_count_once(runner: CliRunner, golden_dir: Path) -> None:
    copy = (golden_dir / "runs_log" / "2026-05.jsonl").read_bytes().splitlines()[-1]
    write_shard(golden_dir, "2026-05", [copy + b"\n", copy + b"\n"])
    result = stats(runner, golden_dir, GOLDEN)
    assert result.stdout == GOLDEN_TABLE
    assert result.stderr == "warning: dropped 2 duplicate run_id(s)\n"


def test_row_missing_a_bucket(runner: CliRunner, golden_dir: Path) -> None:
    breakdown = {"think": 1000.0, "act": 1.0}
    write_shard(golden_dir, "2026-05", [golden_run(6, wall_time_breakdown=breakdown)])
    result = stats(runner, golden_dir, GOLDEN, "--json")
    document = json.loads(result.stdout)
    assert document["run_count"] == 6
    # settle is over the five runs that report it; think and act over all six
    assert document["percentiles"]["settle"] == GOLDEN_JSON["percentiles"]["settle"]
    assert document["percentiles"]["think"]["p50"] == 70.0
    assert result.stderr.startswith("note: reported by fewer runs: claude_extract (5 of 6), ")


# ---------------------------------------------------------------- bad flags and no data


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bucket", "thinking"], "'thinking': neither one of the nine buckets"),
        (["--since", "7x"], "'7x' is not a duration"),
        (["--since", "0d"], "'0d' is not a duration"),
        (["--since", "-1d"], "'-1d' is not a duration"),
        (["--since", "d"], "'d' is not a duration"),
        (["--status", "paused"], "'paused' is not one of"),
        (["--last", "0"], "0 is not in the range x>=1"),
        (["--last", "ten"], "'ten' is not a valid integer"),
    ],
)
def test_bad_flags_are_usage_errors(
    runner: CliRunner, golden_dir: Path, args: list[str], message: str
) -> None:
    result = stats(runner, golden_dir, GOLDEN, *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Usage: mantis runs stats" in result.stderr
    assert result.stdout == ""


def test_huge_since_means_everything(runner: CliRunner, golden_dir: Path) -> None:
    result = stats(runner, golden_dir, GOLDEN, "--since", "99999999d")
    header, table = result.stdout.split("\n", 1)
    assert header.endswith(" in the last 99999999d:")
    assert table == GOLDEN_TABLE.split("\n", 1)[1]


def test_missing_data_dir(runner: CliRunner, tmp_path: Path) -> None:
    result = stats(runner, tmp_path / "nowhere", GOLDEN)
    assert result.exit_code == 1
    assert "nowhere does not exist" in result.stderr


def test_data_dir_without_a_log_has_no_runs(runner: CliRunner, data_dir: Path) -> None:
    """Nothing logged yet is the ordinary "no runs" answer: scripts get the JSON either way."""
    result = stats(runner, data_dir, GOLDEN)
    assert result.exit_code == 1
    assert f"no succeeded runs of {GOLDEN} in {data_dir / 'runs_log'}" in result.stderr
    as_json = stats(runner, data_dir, GOLDEN, "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout) == {"workflow_id": GOLDEN, "run_count": 0, "percentiles": {}}


def test_no_matching_rows(runner: CliRunner, golden_dir: Path) -> None:
    result = stats(runner, golden_dir, "default__nobody-v1")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "no succeeded runs of default__nobody-v1" in result.stderr


def test_no_matching_rows_still_prints_the_json(runner: CliRunner, golden_dir: Path) -> None:
    result = stats(runner, golden_dir, "default__nobody-v1", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "workflow_id": "default__nobody-v1",
        "run_count": 0,
        "percentiles": {},
    }
    assert "no succeeded runs" in result.stderr


def test_help_lists_every_flag(runner: CliRunner) -> None:
    result = runner.invoke(mantis, ["runs", "stats", "--help"])
    assert result.exit_code == 0
    for flag in ("--last", "--bucket", "--since", "--status", "--json", "--data-dir"):
        assert flag in result.stdout
