"""`mantis runs compare` on generated data with a known regression, and on hand-made edges."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from mantisd.cli import mantis
from mantisd.sample import generate, workflow_ids
from mantisd.schema import BUCKETS
from tests.rows import utc
from tests.stats_data import GOLDEN, line, write_shard

MANTIS = Path(sys.executable).parent / "mantis"
UTC = dt.UTC
END = dt.datetime(2026, 11, 1, tzinfo=UTC)  # September and October 2026
CURRENT_START = dt.datetime(2026, 10, 2, tzinfo=UTC)
WINDOWS = ["--since", "2026-10-02", "--until", "2026-11-01"]  # baseline: the 30 days before
WORKFLOW = workflow_ids(3)[0]
SAMPLE = {"rows": 12_000, "months": 2, "workflows": 3, "seed": 7, "end": END}


@pytest.fixture(scope="module")
def regressed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`settle` of the most popular workflow is 30% slower in the current window only."""
    data_dir = tmp_path_factory.mktemp("regressed")
    generate(
        data_dir,
        **SAMPLE,
        slow_bucket="settle",
        slow_factor=1.3,
        slow_since=CURRENT_START,
        slow_workflow=WORKFLOW,
    )
    return data_dir


@pytest.fixture(scope="module")
def steady_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same data, draw for draw, without the slowdown."""
    data_dir = tmp_path_factory.mktemp("steady")
    generate(data_dir, **SAMPLE)
    return data_dir


def compare(data_dir: Path, *args: str, workflow: str = WORKFLOW) -> Result:
    runner = CliRunner(env={"MANTIS_DATA_DIR": None})
    return runner.invoke(mantis, ["runs", "compare", workflow, "--data-dir", str(data_dir), *args])


def document(result: Result) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def verdicts(result: Result) -> dict[str, str]:
    return {b["bucket"]: b["verdict"] for b in document(result)["buckets"]}


# ---------------------------------------------------------------- the known regression


def test_flags_exactly_the_slowed_bucket(regressed_dir: Path) -> None:
    result = compare(regressed_dir, *WINDOWS, "--json")
    assert result.exit_code == 0, result.output
    found = verdicts(result)
    assert {b for b, v in found.items() if v != "~"} == {"settle"}
    assert found["settle"] == "regressed"
    settle = document(result)["buckets"][0]
    assert settle["bucket"] == "settle"  # the worst regression first
    assert 0.25 < settle["p50_change"] < 0.35 and 0.2 < settle["p95_change"] < 0.4
    assert settle["p_value"] < 1e-10
    assert list(found)[-1] == "total_time_s"


def test_flags_nothing_without_the_slowdown(steady_dir: Path) -> None:
    result = compare(steady_dir, *WINDOWS, "--json", "--fail-on-regression")
    assert result.exit_code == 0, result.output
    assert set(verdicts(result).values()) == {"~"}
    assert len(verdicts(result)) == len(BUCKETS) + 1


def test_fail_on_regression_exit_status(regressed_dir: Path, steady_dir: Path) -> None:
    failed = compare(regressed_dir, *WINDOWS, "--fail-on-regression")
    assert failed.exit_code == 3
    assert failed.stderr.startswith("regressed: settle (+3")  # +30.4%
    assert "regressed" in failed.stdout  # the table is printed first
    assert compare(regressed_dir, *WINDOWS).exit_code == 0  # without the flag: 0
    assert compare(steady_dir, *WINDOWS, "--fail-on-regression").exit_code == 0


def test_min_effect_and_alpha_move_the_line(regressed_dir: Path) -> None:
    assert verdicts(compare(regressed_dir, *WINDOWS, "--json", "--min-effect", "40%"))[
        "settle"
    ] == ("~")
    as_fraction = compare(regressed_dir, *WINDOWS, "--json", "--min-effect", "0.05")
    assert document(as_fraction)["min_effect"] == 0.05
    assert verdicts(as_fraction) == verdicts(compare(regressed_dir, *WINDOWS, "--json"))
    # total_time_s moved ~3%, significantly: with no minimum effect it is a regression too
    loose = verdicts(compare(regressed_dir, *WINDOWS, "--json", "--min-effect", "0%"))
    assert loose["total_time_s"] == "regressed"
    strict = document(compare(regressed_dir, *WINDOWS, "--json", "--alpha", "1e-300"))
    assert strict["alpha"] == 1e-300
    assert verdicts(compare(regressed_dir, *WINDOWS, "--json", "--alpha", "0.999"))["settle"] == (
        "regressed"
    )


def test_table(regressed_dir: Path) -> None:
    result = compare(regressed_dir, *WINDOWS)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"Succeeded runs of {WORKFLOW}:"
    assert lines[1].split() == ["baseline", "2915", "runs", "2026-09-02", "to", "2026-10-02"]
    assert lines[2].split() == ["current", "2904", "runs", "2026-10-02", "to", "2026-11-01"]
    assert "p < 0.05" in lines[3] and "more than 5%" in lines[3]
    assert lines[4] == ""
    assert lines[5].split() == [
        "bucket",
        "n",
        "base",
        "n",
        "cur",
        "p50",
        "base",
        "p50",
        "cur",
        "Δp50",
        "p95",
        "base",
        "p95",
        "cur",
        "Δp95",
        "p",
        "verdict",
    ]
    rules = [i for i, text in enumerate(lines) if text.startswith("─")]
    assert rules == [6, len(lines) - 2]
    assert len({len(lines[i]) for i in rules}) == 1
    settle = lines[7].split()
    assert settle[0] == "settle" and settle[-1] == "regressed" and settle[-2] == "<0.001"
    assert settle[5] == "+30.4%" and settle[3].endswith("s")
    assert lines[-1].startswith("total_time_s ")
    assert result.stderr == ""


def test_json_shape(regressed_dir: Path) -> None:
    doc = document(compare(regressed_dir, *WINDOWS, "--json"))
    assert list(doc) == [
        "workflow_id",
        "status",
        "alpha",
        "min_effect",
        "correction",
        "baseline",
        "current",
        "buckets",
    ]
    assert doc["workflow_id"] == WORKFLOW and doc["status"] == "succeeded"
    assert doc["baseline"] == {
        "since": "2026-09-02T00:00:00Z",
        "until": "2026-10-02T00:00:00Z",
        "run_count": 2915,
    }
    assert doc["current"]["since"] == "2026-10-02T00:00:00Z"
    assert doc["current"]["until"] == "2026-11-01T00:00:00Z"
    for bucket in doc["buckets"]:
        assert list(bucket) == [
            "bucket",
            "baseline",
            "current",
            "p50_change",
            "p95_change",
            "p_value",
            "p_adjusted",
            "verdict",
        ]
        assert list(bucket["baseline"]) == ["n", "p50", "p95"] == list(bucket["current"])


def test_last_applies_to_each_window(regressed_dir: Path) -> None:
    doc = document(compare(regressed_dir, *WINDOWS, "--json", "--last", "200"))
    assert doc["baseline"]["run_count"] == doc["current"]["run_count"] == 200
    assert {b["baseline"]["n"] for b in doc["buckets"]} == {200}


def test_bucket_and_status_flags(regressed_dir: Path) -> None:
    doc = document(compare(regressed_dir, *WINDOWS, "--json", "--bucket", "act", "--status", ""))
    assert [b["bucket"] for b in doc["buckets"]] == ["act", "total_time_s"]
    assert doc["status"] is None and doc["baseline"]["run_count"] > 2915
    unknown = compare(regressed_dir, *WINDOWS, "--bucket", "nap")
    assert unknown.exit_code == 2 and "'nap': neither one of the nine" in unknown.stderr


def test_baseline_flags(regressed_dir: Path) -> None:
    args = [*WINDOWS, "--json", "--baseline-since", "2026-09-10", "--baseline-until", "2026-09-20"]
    doc = document(compare(regressed_dir, *args))
    assert doc["baseline"]["since"] == "2026-09-10T00:00:00Z"
    assert doc["baseline"]["until"] == "2026-09-20T00:00:00Z"
    assert 900 < doc["baseline"]["run_count"] < 1000
    # only the end given: the baseline is as long as the current window (30 days)
    ends = document(compare(regressed_dir, *WINDOWS, "--json", "--baseline-until", "2026-09-25"))
    assert ends["baseline"]["since"] == "2026-08-26T00:00:00Z"


# ---------------------------------------------------------------- hand-made edges


def run_at(finished: dt.datetime, **breakdown: float) -> bytes:
    return line(
        workflow_id=GOLDEN,
        finished_at=utc(finished),
        created_at=utc(finished - dt.timedelta(seconds=30)),
        wall_time_breakdown=breakdown or {"think": 1.0},
    )


def test_default_windows_are_the_last_30_days_and_the_30_before(data_dir: Path) -> None:
    now = dt.datetime.now(UTC).replace(microsecond=0)
    ages = [1, 29, 31, 59, 61]  # days: two current, two baseline, one outside
    for age in ages:
        finished = now - dt.timedelta(days=age)
        write_shard(data_dir, finished.strftime("%Y-%m"), [run_at(finished, think=float(age))])
    result = compare(data_dir, "--json", workflow=GOLDEN)
    assert result.exit_code == 0, result.output
    doc = document(result)
    assert doc["current"]["run_count"] == 2 and doc["baseline"]["run_count"] == 2
    since = dt.datetime.fromisoformat(doc["current"]["since"])
    until = dt.datetime.fromisoformat(doc["current"]["until"])
    assert until - since == dt.timedelta(days=30) and abs(until - now) < dt.timedelta(minutes=1)
    assert doc["baseline"]["until"] == doc["current"]["since"]
    think = doc["buckets"][0]
    assert think["baseline"]["p50"] == 45.0 and think["current"]["p50"] == 15.0


def test_default_current_window_counts_rows_from_clocks_running_ahead(data_dir: Path) -> None:
    """The store takes `finished_at` up to a day ahead of its clock; without --until such a
    run is a current run (as `stats --since 30d` counts it), not silently dropped."""
    now = dt.datetime.now(UTC).replace(microsecond=0)
    runs = {
        "baseline": now - dt.timedelta(days=45),
        "current": now - dt.timedelta(days=3),
        "ahead": now + dt.timedelta(hours=2),
    }
    for when in runs.values():
        write_shard(data_dir, when.strftime("%Y-%m"), [run_at(when)])
    doc = document(compare(data_dir, "--json", workflow=GOLDEN))
    assert (doc["baseline"]["run_count"], doc["current"]["run_count"]) == (1, 2)


def test_window_edges_and_month_shards(data_dir: Path) -> None:
    at = dt.datetime
    write_shard(
        data_dir,
        "2026-09",
        [
            run_at(at(2026, 9, 19, 23, 59, 59, tzinfo=UTC), think=1000.0),  # before baseline
            run_at(at(2026, 9, 20, tzinfo=UTC), think=1.0),  # on baseline-since: in
            run_at(at(2026, 9, 30, 12, tzinfo=UTC), think=2.0),
        ],
    )
    write_shard(
        data_dir,
        "2026-10",
        [
            run_at(at(2026, 10, 5, tzinfo=UTC), think=3.0),  # on baseline-until = since: current
            run_at(at(2026, 10, 20, tzinfo=UTC), think=4.0),
        ],
    )
    write_shard(
        data_dir,
        "2026-11",
        [
            run_at(at(2026, 11, 3, tzinfo=UTC), think=5.0),
            run_at(at(2026, 11, 4, 1, tzinfo=UTC), think=6.0),  # on until (01:00+01:00): out
        ],
    )
    args = ["--since", "2026-10-05", "--until", "2026-11-04T01:00:00+01:00", "--json"]
    args += ["--baseline-since", "2026-09-20"]
    doc = document(compare(data_dir, *args, workflow=GOLDEN))
    think = doc["buckets"][0]
    assert doc["baseline"]["run_count"] == 2 and think["baseline"]["p50"] == 1.5  # 1, 2
    assert doc["current"]["run_count"] == 3 and think["current"]["p50"] == 4.0  # 3, 4, 5


def test_a_bucket_one_window_lacks_is_not_comparable(data_dir: Path) -> None:
    at = dt.datetime
    write_shard(
        data_dir,
        "2026-10",
        [run_at(at(2026, 10, d, tzinfo=UTC), think=1.0, gpu_warmup=5.0) for d in (1, 2, 3)]
        + [run_at(at(2026, 10, d, tzinfo=UTC), think=2.0) for d in (11, 12, 13)],
    )
    args = ["--since", "2026-10-10", "--until", "2026-10-20", "--json"]
    result = compare(data_dir, *args, workflow=GOLDEN)
    assert result.exit_code == 0, result.output
    gpu = next(b for b in document(result)["buckets"] if b["bucket"] == "gpu_warmup")
    assert gpu["current"] == {"n": 0, "p50": None, "p95": None}
    assert gpu["p_value"] is None and gpu["p50_change"] is None and gpu["verdict"] == "n/a"
    table = compare(data_dir, *args[:-1], workflow=GOLDEN)
    gpu_line = next(t for t in table.stdout.splitlines() if t.startswith("gpu_warmup"))
    assert gpu_line.split() == ["gpu_warmup", "3", "0", "5.0s", "-", "-", "5.0s", "-", "-", "-"] + [
        "n/a"
    ]


@pytest.mark.parametrize(
    ("args", "window"),
    [
        (["--since", "2026-10-10", "--until", "2026-10-20"], "the current window"),
        (["--since", "2026-10-02", "--until", "2026-10-08"], "the baseline window"),
        (["--since", "2026-12-01", "--until", "2026-12-10"], "the baseline window ("),
    ],
)
def test_an_empty_window_is_exit_1_with_the_json_still_printed(
    data_dir: Path, args: list[str], window: str
) -> None:
    write_shard(data_dir, "2026-10", [run_at(dt.datetime(2026, 10, 5, tzinfo=UTC))])
    plain = compare(data_dir, *args, workflow=GOLDEN)
    assert plain.exit_code == 1 and plain.stdout == ""
    assert plain.stderr.startswith(f"Error: no succeeded runs of {GOLDEN} in {window}")
    assert plain.stderr.rstrip().endswith("nothing to compare")
    as_json = compare(data_dir, *args, "--json", workflow=GOLDEN)
    assert as_json.exit_code == 1 and document(as_json)["buckets"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--alpha", "0"], "0<x<1"),
        (["--alpha", "1"], "0<x<1"),
        (["--alpha", "-0.1"], "0<x<1"),
        (["--min-effect", "-1"], "'-1' is not a relative effect"),
        (["--min-effect", "-5%"], "'-5%' is not a relative effect"),
        (["--min-effect", "five"], "'five' is not a relative effect"),
        (["--min-effect", "5"], "'5' is ambiguous: write 5% for 5 percent"),
        (["--last", "0"], "0 is not in the range x>=1"),
        (["--since", "30x"], "'30x' is not a duration"),
        (["--since", "2026-11-01", "--until", "2026-10-01"], "empty window: --since"),
        (["--baseline-since", "2026-10-01", "--baseline-until", "2026-09-01"], "--baseline-since"),
        (["--since", "60d", "--baseline-since", "90d", "--baseline-until", "45d"], "overlap"),
        (["--status", "paused"], "'paused' is not one of"),
    ],
)
def test_bad_flags_are_usage_errors(data_dir: Path, args: list[str], message: str) -> None:
    result = compare(data_dir, *args, workflow=GOLDEN)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Usage: mantis runs compare" in result.stderr


def test_help_shows_the_defaults() -> None:
    result = CliRunner().invoke(mantis, ["runs", "compare", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for text in ("--baseline-since", "--baseline-until", "[default: 30d]", "[default: 0.05"):
        assert text in result.stdout
    assert "[default: 5%]" in result.stdout and "--fail-on-regression" in result.stdout


# ---------------------------------------------------------------- the real console script


def test_console_script_gates_a_pipeline(regressed_dir: Path, steady_dir: Path) -> None:
    def run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MANTIS), "runs", "compare", WORKFLOW, *WINDOWS, "--data-dir", str(data_dir)]
            + list(args),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    gate = run(regressed_dir, "--fail-on-regression", "--json")
    assert gate.returncode == 3, gate.stderr
    assert [b["bucket"] for b in json.loads(gate.stdout)["buckets"] if b["verdict"] != "~"] == [
        "settle"
    ]
    assert gate.stderr.startswith("regressed: settle (+30.")
    passed = run(steady_dir, "--fail-on-regression")
    assert passed.returncode == 0, passed.stderr
    assert passed.stdout.splitlines()[0] == f"Succeeded runs of {WORKFLOW}:"
    assert passed.stderr == ""


def test_compare_and_trend_do_not_load_anyio(regressed_dir: Path) -> None:
    code = (
        "import json, sys\n"
        "from mantisd.cli import mantis\n"
        "for command in ('compare', 'trend'):\n"
        f"    mantis(['runs', command, {WORKFLOW!r}, '--data-dir', {str(regressed_dir)!r},"
        " '--until', '2026-11-01'], standalone_mode=False)\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(proc.stderr.splitlines()[-1]))
    assert {"mantisd.stats.comparison", "mantisd.stats.trend"} <= loaded
    assert not {m for m in loaded if m.split(".")[0] in {"anyio", "sniffio"}}
