"""`mantis runs list`, and finding one's way in the data: unknown workflow ids, a `runs_log/`
given as the data dir, an unreadable log (its own exit status), `trend --bucket` twice."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mantisd.cli import mantis
from mantisd.cli.common import EXIT_UNREADABLE
from tests.rows import utc
from tests.stats_data import line, write_shard
from tests.unprivileged import AS_NOBODY


def at(day: int, hour: int = 12, month: int = 10) -> str:
    return utc(dt.datetime(2026, month, day, hour, tzinfo=dt.UTC))


def run(workflow: str, finished: str, status: str = "succeeded", **extra: object) -> bytes:
    return line(workflow_id=workflow, finished_at=finished, status=status, **extra)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"MANTIS_DATA_DIR": None})


@pytest.fixture
def log_dir(data_dir: Path) -> Path:
    """Three workflows over two months; `beta` has a run logged twice (once per shard) whose
    newer line says failed, and the September shard ends in a torn line."""
    write_shard(
        data_dir,
        "2026-09",
        [
            run("alpha", at(3, month=9)),
            run("beta", at(5, month=9), run_id="beta-twice"),
            run("gamma", at(20, month=9)),
        ],
        end=b'{"torn',
    )
    write_shard(
        data_dir,
        "2026-10",
        [
            run("alpha", at(1)),
            run("alpha", at(2), "failed", error="boom"),
            run("beta", at(4, 9)),
            run("beta", at(5), "failed", run_id="beta-twice", error="boom"),
            run("alpha", at(3, 8)),
        ],
    )
    return data_dir


def list_runs(runner: CliRunner, data_dir: Path, *args: str) -> Result:
    return runner.invoke(mantis, ["runs", "list", *args, "--data-dir", str(data_dir)])


# --- mantis runs list ---------------------------------------------------------------------

LOG_TABLE = """\
3 workflows, 7 runs, busiest first:

workflow  runs  failed  last finished
─────────────────────────────────────
alpha        4       1  2026-10-03 08:00:00Z
beta         2       1  2026-10-05 12:00:00Z
gamma        1       0  2026-09-20 12:00:00Z
"""


def test_table_busiest_first_each_run_once(runner: CliRunner, log_dir: Path) -> None:
    result = list_runs(runner, log_dir)
    assert result.exit_code == 0, result.output
    assert result.stdout == LOG_TABLE
    assert result.stderr == "warning: skipped 1 unreadable line(s); dropped 1 duplicate run_id(s)\n"


def test_json(runner: CliRunner, log_dir: Path) -> None:
    result = list_runs(runner, log_dir, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "workflows": [
            {"workflow_id": "alpha", "run_count": 4, "failed": 1, "last_finished_at": at(3, 8)},
            {"workflow_id": "beta", "run_count": 2, "failed": 1, "last_finished_at": at(5)},
            {
                "workflow_id": "gamma",
                "run_count": 1,
                "failed": 0,
                "last_finished_at": at(20, 12, 9),
            },
        ]
    }


def test_ties_by_id(runner: CliRunner, data_dir: Path) -> None:
    write_shard(data_dir, "2026-10", [run(w, at(1)) for w in ("b", "c", "a")])
    result = list_runs(runner, data_dir, "--json")
    assert [w["workflow_id"] for w in json.loads(result.stdout)["workflows"]] == ["a", "b", "c"]


def test_since_counts_newer_runs_and_never_opens_older_months(
    runner: CliRunner, log_dir: Path
) -> None:
    """The torn line of September is not reported: that shard was not read."""
    result = list_runs(runner, log_dir, "--since", "2026-10-03", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["workflows"] == [
        {"workflow_id": "beta", "run_count": 2, "failed": 1, "last_finished_at": at(5)},
        {"workflow_id": "alpha", "run_count": 1, "failed": 0, "last_finished_at": at(3, 8)},
    ]
    assert "unreadable" not in result.stderr


def test_header_names_the_window(runner: CliRunner, log_dir: Path) -> None:
    result = list_runs(runner, log_dir, "--since", "2026-10-03")
    assert result.stdout.splitlines()[0] == "2 workflows, 3 runs since 2026-10-03, busiest first:"


def test_no_runs_is_exit_1_with_the_json_still_printed(runner: CliRunner, data_dir: Path) -> None:
    result = list_runs(runner, data_dir, "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"workflows": []}
    assert result.stderr == f"Error: no runs in {data_dir / 'runs_log'}\n"


def test_a_workflow_id_cannot_drive_the_terminal(runner: CliRunner, data_dir: Path) -> None:
    write_shard(data_dir, "2026-10", [run("evil\x1b]0;owned\x07\x1b[2J", at(1))])
    result = list_runs(runner, data_dir)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "evil\\x1b]0;owned\\x07\\x1b[2J" in result.stdout


# --- stats: an unknown workflow id --------------------------------------------------------


def stats(runner: CliRunner, data_dir: Path, *args: str) -> Result:
    return runner.invoke(mantis, ["runs", "stats", *args, "--data-dir", str(data_dir)])


def test_unknown_workflow_names_the_nearest_ids(runner: CliRunner, data_dir: Path) -> None:
    ids = ["default__marketplace-listings-v1", "acme__marketplace-listings-v1", "default__ocr-v2"]
    write_shard(data_dir, "2026-10", [run(w, at(1)) for w in ids])
    result = stats(runner, data_dir, "default__marketplace-listing-v1")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: no succeeded runs of default__marketplace-listing-v1 in "
        f"{data_dir / 'runs_log'}; the log has no workflow default__marketplace-listing-v1: did "
        "you mean default__marketplace-listings-v1 or acme__marketplace-listings-v1?\n"
    )


def test_unknown_workflow_with_nothing_near(runner: CliRunner, data_dir: Path) -> None:
    write_shard(data_dir, "2026-10", [run("alpha", at(1))])
    result = stats(runner, data_dir, "zzzzzz")
    assert result.exit_code == 1
    assert result.stderr.endswith(
        "; the log has no workflow zzzzzz (`mantis runs list` shows its workflows)\n"
    )


def test_a_known_workflow_without_matching_runs_gets_no_suggestion(
    runner: CliRunner, log_dir: Path
) -> None:
    """gamma is in the log, only not in the window: the usual "no runs", nothing more."""
    result = stats(runner, log_dir, "gamma", "--since", "2026-10-01")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: no succeeded runs of gamma since 2026-10-01 in {log_dir / 'runs_log'}\n"
    )


# --- --data-dir pointed at runs_log/ -------------------------------------------------------


@pytest.mark.parametrize("command", [["list"], ["stats", "alpha"], ["trend", "alpha"]])
def test_runs_log_given_as_the_data_dir_gets_a_hint(
    runner: CliRunner, log_dir: Path, command: list[str]
) -> None:
    shards = log_dir / "runs_log"
    result = runner.invoke(mantis, ["runs", *command, "--data-dir", str(shards)])
    assert result.exit_code == 2
    assert (
        f"Error: {shards} is a runs_log/ directory (it holds the month shards); the data dir "
        f"is its parent: --data-dir {log_dir}\n"
    ) in result.stderr


def test_a_copy_of_the_shards_elsewhere_gets_the_hint_too(
    runner: CliRunner, log_dir: Path, tmp_path: Path
) -> None:
    """Not named runs_log/, but holding month shards and no runs_log/ of its own."""
    copy = tmp_path / "archive"
    copy.mkdir()
    (copy / "2026-10.jsonl").write_bytes((log_dir / "runs_log" / "2026-10.jsonl").read_bytes())
    result = runner.invoke(mantis, ["runs", "list", "--data-dir", str(copy)])
    assert result.exit_code == 2
    assert f"the data dir is its parent: --data-dir {tmp_path}" in result.stderr


def test_an_empty_data_dir_is_still_no_runs(runner: CliRunner, data_dir: Path) -> None:
    (data_dir / "notes.txt").write_text("not a shard")
    assert list_runs(runner, data_dir).exit_code == 1


# --- an unreadable log: exit 4, never "no runs" --------------------------------------------


def run_mantis_as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    """Root reads anything: `mantis` runs as `nobody`, so that modes bite (as a module: the
    console script itself may lie where `nobody` cannot read it, in a clone in root's home)."""
    prefix = AS_NOBODY if os.geteuid() == 0 else ()
    return subprocess.run(
        [*prefix, sys.executable, "-m", "mantisd.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )


@pytest.mark.parametrize("command", [["list"], ["stats", "alpha"], ["trend", "alpha"]])
@pytest.mark.parametrize("unreadable", ["shard", "runs_log", "data dir"])
def test_an_unreadable_log_is_exit_4(
    traversable_dir: Path, command: list[str], unreadable: str
) -> None:
    data_dir = traversable_dir / "data"
    write_shard(data_dir, "2026-10", [run("alpha", at(1))])
    write_shard(data_dir, "2026-09", [run("alpha", at(1, month=9))])
    for path in [data_dir, *data_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    target = {
        "shard": data_dir / "runs_log" / "2026-09.jsonl",
        "runs_log": data_dir / "runs_log",
        "data dir": data_dir,
    }[unreadable]
    target.chmod(0)
    proc = run_mantis_as_nobody("runs", *command, "--data-dir", str(data_dir))
    assert proc.returncode == EXIT_UNREADABLE == 4, proc.stderr
    assert proc.stderr.startswith("Error: cannot read the run log: [Errno 13] Permission denied")


# --- trend --bucket twice -------------------------------------------------------------------


def test_trend_refuses_two_buckets(runner: CliRunner, log_dir: Path) -> None:
    result = runner.invoke(
        mantis,
        ["runs", "trend", "alpha", "--bucket", "think", "--bucket", "settle"]
        + ["--data-dir", str(log_dir)],
    )
    assert result.exit_code == 2
    assert (
        "Error: Invalid value for '--bucket': trend follows one bucket, got 2 (think, settle): "
        "run it once per bucket (mantis runs stats and compare take several)"
    ) in result.stderr


def test_trend_one_bucket_still_works(runner: CliRunner, log_dir: Path) -> None:
    result = runner.invoke(
        mantis,
        ["runs", "trend", "alpha", "--bucket", "think", "--json", "--status", ""]
        + ["--since", "2026-09-01", "--until", "2026-11-01", "--every", "1mo"]
        + ["--data-dir", str(log_dir)],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["bucket"] == "think"
    assert [p["n"] for p in document["periods"]] == [1, 3]
