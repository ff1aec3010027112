"""`mantis runs ship` into a real PostgreSQL: every row once, cursors, dead letters, faults."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mantisd.fleet.migrations import LATEST
from mantisd.fleet.shipper import BATCH_BYTES, Shipper, ShipReport, Stopper
from mantisd.paths import shard_path
from mantisd.schema import BUCKETS
from mantisd.source_id import SOURCE_FILE, ensure_source, read_source
from tests.fleet import (
    MANTIS,
    archive,
    execute,
    line_ids,
    month_line,
    month_lines,
    rows,
    run_ids,
    ship,
    shipped,
)
from tests.rows import make_row, utc
from tests.stats_data import write_shard


def cursor_of(url: str, shard: str) -> tuple[int, int, int]:
    (found,) = rows(
        url,
        "SELECT device, inode, byte_offset FROM mantis.cursors WHERE shard = %s",
        (shard,),
    )
    return int(found[0]), int(found[1]), int(found[2])


# --- every row, every key, once --------------------------------------------------------------


def stored_row(record: dict[str, Any]) -> dict[str, Any]:
    """A `mantis.runs` row back as the stored line's JSON object (timestamps as instants)."""
    breakdown = {b: record[b] for b in BUCKETS if record[b] is not None}
    breakdown |= record["other_buckets"] or {}
    row = {
        key: record[key]
        for key in ("schema_version", "run_id", "tenant_id", "profile_id", "workflow_id")
    }
    row |= {key: record[key] for key in ("plan_signature", "model", "status")}
    row |= {"created_at": record["created_at"], "finished_at": record["finished_at"]}
    row |= {"total_time_s": record["total_time_s"], "wall_time_breakdown": breakdown}
    row |= {key: record[key] for key in ("cost_breakdown", "steps_executed", "viable", "error")}
    return row | (record["extra"] or {})


def as_instants(row: dict[str, Any]) -> dict[str, Any]:
    return row | {key: dt.datetime.fromisoformat(row[key]) for key in ("created_at", "finished_at")}


def test_every_key_of_every_row_survives(pg_url: str, data_dir: Path) -> None:
    lines = [
        month_line("2026-09"),
        month_line(
            "2026-10",
            wall_time_breakdown={"think": 1.5, "warmup": 2.25, "settle": 0.0},
            cost_breakdown={"usd": 0.12, "tokens": {"in": 3, "out": 4}, "note": "cached"},
            error={"kind": "timeout", "step": 7},
            status="failed",
            plan_signature=None,
            model=None,
            region="eu-west",
            attempt=2,
        ),
        month_line("2026-10", error="boom", status="failed", total_time_s=1e-06),
    ]
    write_shard(data_dir, "2026-09", lines[:1])
    write_shard(data_dir, "2026-10", lines[1:])
    result = ship(pg_url, data_dir, "--label", "pod-a")
    assert shipped(result) == {
        "2026-09.jsonl": (1, 0, 0),
        "2026-10.jsonl": (2, 0, 0),
        "total": (3, 0, 0),
    }
    with __import__("psycopg").connect(pg_url) as conn:
        cur = conn.execute("SELECT * FROM mantis.runs ORDER BY finished_at")
        names = [c.name for c in cur.description or ()]
        records = [dict(zip(names, values, strict=True)) for values in cur.fetchall()]
    assert [as_instants(json.loads(raw)) for raw in lines] == [stored_row(r) for r in records]
    source = read_source(data_dir)
    assert source is not None and {r["source_id"] for r in records} == {source.source_id}
    assert rows(pg_url, "SELECT source_id, label, data_dir FROM mantis.sources") == [
        (source.source_id, "pod-a", str(data_dir))
    ]
    partitions = rows(
        pg_url,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'mantis.runs'::regclass ORDER BY 1",
    )
    assert partitions == [("runs_2026_09",), ("runs_2026_10",)]
    assert rows(pg_url, "SELECT max(version) FROM mantis.schema_version") == [(LATEST,)]


def test_a_replay_inserts_nothing(pg_url: str, data_dir: Path) -> None:
    lines = month_lines("2026-10", 50)
    write_shard(data_dir, "2026-10", [*lines, b"not json\n"])
    assert shipped(ship(pg_url, data_dir))["total"] == (50, 0, 1)
    again = ship(pg_url, data_dir)
    assert again.returncode == 0 and "nothing new to ship" in again.stdout
    execute(pg_url, "DELETE FROM mantis.cursors")  # every line is read again ...
    assert shipped(ship(pg_url, data_dir))["total"] == (0, 50, 0)  # ... and skipped by key
    assert run_ids(pg_url) == line_ids(lines)
    assert rows(pg_url, "SELECT count(*) FROM mantis.dead_letters") == [(1,)]


def test_two_sources_keep_their_own_rows_and_cursors(pg_url: str, tmp_path: Path) -> None:
    pods = {name: tmp_path / name for name in ("pod-a", "pod-b")}
    lines = {}
    for name, pod in pods.items():
        pod.mkdir()
        lines[name] = month_lines("2026-10", 20)
        write_shard(pod, "2026-10", lines[name])
        assert shipped(ship(pg_url, pod, "--label", name))["total"] == (20, 0, 0)
    per_source = rows(
        pg_url,
        "SELECT s.label, count(*) FROM mantis.runs r JOIN mantis.sources s USING (source_id) "
        "GROUP BY 1 ORDER BY 1",
    )
    assert per_source == [("pod-a", 20), ("pod-b", 20)]
    assert rows(pg_url, "SELECT count(*) FROM mantis.cursors") == [(2,)]


# --- dead letters ----------------------------------------------------------------------------


def test_lines_that_are_not_rows_become_dead_letters_and_never_block(
    pg_url: str, data_dir: Path
) -> None:
    good = month_lines("2026-10", 4)
    no_workflow = make_row(finished_at=utc(dt.datetime(2026, 10, 3, tzinfo=dt.UTC)))
    del no_workflow["workflow_id"]
    bad = [
        b'{"run_id": "torn", "sche\n',
        b"\n",
        msgspec.json.encode(no_workflow) + b"\n",
        month_line("2026-10", model="nul\x00inside"),  # validate takes it, PostgreSQL cannot
        month_line("2026-10", steps_executed=2**63),  # beyond bigint
    ]
    lines = [good[0], bad[0], bad[1], good[1], bad[2], bad[3], good[2], bad[4], good[3]]
    path = write_shard(data_dir, "2026-10", lines)
    assert shipped(ship(pg_url, data_dir))["total"] == (4, 0, 5)
    assert run_ids(pg_url) == line_ids(good)
    letters = rows(
        pg_url,
        "SELECT shard, byte_offset, raw, raw_length, reason FROM mantis.dead_letters "
        "ORDER BY byte_offset",
    )
    content = path.read_bytes()
    for shard, offset, raw, length, _ in letters:
        assert shard == "2026-10.jsonl"
        assert content[offset : offset + length + 1] == bytes(raw) + b"\n"
    assert [bytes(raw) + b"\n" for _, _, raw, _, _ in letters] == bad
    reasons = [reason for *_, reason in letters]
    assert reasons[0].startswith("row: not valid JSON")
    assert reasons[2] == "workflow_id: missing required field"
    assert reasons[3].startswith("postgresql: ") and "0x00" in reasons[3]
    assert reasons[4].startswith("postgresql: ") and "out of range" in reasons[4]
    assert cursor_of(pg_url, "2026-10.jsonl")[2] == len(content)


def test_a_line_longer_than_a_batch_is_dead_lettered_in_part(pg_url: str, data_dir: Path) -> None:
    huge = b'{"x":"' + b"a" * (BATCH_BYTES + (1 << 20)) + b'"}\n'
    good = month_lines("2026-10", 2)
    write_shard(data_dir, "2026-10", [good[0], huge, good[1]])
    assert shipped(ship(pg_url, data_dir))["total"] == (2, 0, 1)
    ((raw, length, reason),) = rows(
        pg_url, "SELECT raw, raw_length, reason FROM mantis.dead_letters"
    )
    assert length == len(huge) - 1 and len(raw) == 64 * 1024 and "longer than a batch" in reason


# --- the cursor: partial lines, shards that change under the shipper -------------------------


def test_a_torn_last_line_is_shipped_once_completed(pg_url: str, data_dir: Path) -> None:
    first, second = month_line("2026-10"), month_line("2026-10")
    path = write_shard(data_dir, "2026-10", [first], end=second[:40])
    assert shipped(ship(pg_url, data_dir))["total"] == (1, 0, 0)
    assert cursor_of(pg_url, "2026-10.jsonl")[2] == len(first)
    with open(path, "ab") as f:
        f.write(second[40:])
    assert shipped(ship(pg_url, data_dir))["total"] == (1, 0, 0)
    assert run_ids(pg_url) == line_ids([first, second])
    assert rows(pg_url, "SELECT count(*) FROM mantis.dead_letters") == [(0,)]


def _truncated(path: Path, old: list[bytes], new: list[bytes]) -> None:
    with open(path, "r+b") as f:  # same file, same first line, shorter than the cursor
        f.truncate(len(b"".join(old[:3])))
    with open(path, "ab") as f:
        f.write(b"".join(new))


def _replaced(path: Path, old: list[bytes], new: list[bytes]) -> None:
    staged = path.with_name("staged")
    staged.write_bytes(b"".join(old + new))  # a copy, longer: another inode
    staged.rename(path)


def _rewritten(path: Path, old: list[bytes], new: list[bytes]) -> None:
    with open(path, "r+b") as f:  # same inode, longer than before, another first line
        f.truncate(0)
        f.write(b"".join(new + old))


@pytest.mark.parametrize("change", [_truncated, _replaced, _rewritten])
def test_a_shard_that_changed_is_read_again_from_the_start(
    pg_url: str, data_dir: Path, change: Any
) -> None:
    old, new = month_lines("2026-10", 6), month_lines("2026-10", 3)
    path = write_shard(data_dir, "2026-10", old)
    assert shipped(ship(pg_url, data_dir))["total"] == (6, 0, 0)
    change(path, old, new)
    result = ship(pg_url, data_dir)
    loaded, duplicates, _ = shipped(result)["total"]
    assert (loaded, duplicates) == (3, path.read_bytes().count(b"\n") - 3)
    assert "shipping it again from the start" in result.stderr
    assert run_ids(pg_url) == line_ids(old + new)
    assert cursor_of(pg_url, "2026-10.jsonl")[2] == path.stat().st_size


def test_an_archived_shard_is_not_shipped_again_and_its_late_rows_are(
    pg_url: str, data_dir: Path
) -> None:
    """A month archived after it was all shipped: its archive goes on from the shard's cursor
    (nothing to read again, tests/test_ship_archives.py has the rest); a late row recreates
    the month's shard and is shipped from there."""
    old, october = month_lines("2026-09", 5), month_lines("2026-10", 1)
    write_shard(data_dir, "2026-09", old)
    write_shard(data_dir, "2026-10", october)
    assert shipped(ship(pg_url, data_dir))["total"] == (6, 0, 0)
    assert [result.action for result in archive(data_dir, before="2026-10")] == ["archived"]
    assert "nothing new to ship" in ship(pg_url, data_dir).stdout
    late = month_line("2026-09")
    write_shard(data_dir, "2026-09", [late])  # a late row recreates the month's shard
    assert shipped(ship(pg_url, data_dir)) == {"2026-09.jsonl": (1, 0, 0), "total": (1, 0, 0)}
    assert run_ids(pg_url) == line_ids([*old, *october, late])


def test_a_shard_moved_out_of_the_log_is_left_alone(
    pg_url: str, data_dir: Path, tmp_path: Path
) -> None:
    """Archived by hand (docs/operations.md): moved out of `runs_log/`, it is no log file."""
    path = write_shard(data_dir, "2026-09", month_lines("2026-09", 5))
    assert shipped(ship(pg_url, data_dir))["total"] == (5, 0, 0)
    shutil.move(path, tmp_path / "archive.jsonl")
    assert "nothing new to ship" in ship(pg_url, data_dir).stdout
    assert len(run_ids(pg_url)) == 5


def test_a_shard_renamed_to_another_month_loses_and_duplicates_nothing(
    pg_url: str, data_dir: Path
) -> None:
    lines = month_lines("2026-10", 4)
    path = write_shard(data_dir, "2026-10", lines)
    assert shipped(ship(pg_url, data_dir))["total"] == (4, 0, 0)
    path.rename(shard_path(data_dir, "2026-11"))  # a wrong rename between two runs
    assert shipped(ship(pg_url, data_dir)) == {"2026-11.jsonl": (0, 4, 0), "total": (0, 4, 0)}
    assert run_ids(pg_url) == line_ids(lines)


def test_a_linked_shard_is_not_followed_and_the_run_fails(
    pg_url: str, data_dir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.jsonl"
    secret.write_bytes(month_line("2026-09"))
    write_shard(data_dir, "2026-10", month_lines("2026-10", 2))
    shard_path(data_dir, "2026-09").symlink_to(secret)
    result = ship(pg_url, data_dir)
    assert result.returncode == 1
    assert "2026-09.jsonl: not shipped" in result.stderr and "symbolic link" in result.stderr
    assert len(run_ids(pg_url)) == 2  # the other shard still went


class _Passes(Shipper):
    """A shipper that stops its `--follow` after `limit` passes over the log."""

    def __init__(self, *args: Any, limit: int, stopper: Stopper, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.passes, self.limit, self.stopper = 0, limit, stopper

    def ship_pass(self, report: ShipReport, stop: Stopper | None = None) -> None:
        super().ship_pass(report, stop)
        self.passes += 1
        if self.passes >= self.limit:
            self.stopper.set()


def test_follow_keeps_a_problem_once_and_says_it_once_however_many_passes_meet_it(
    pg_url: str, data_dir: Path, tmp_path: Path
) -> None:
    """A linked shard is met again on every pass of `--follow`: one problem, said once (the
    report's problems do not grow pass after pass)."""
    secret = tmp_path / "secret.jsonl"
    secret.write_bytes(month_line("2026-09"))
    write_shard(data_dir, "2026-10", month_lines("2026-10", 2))
    link = shard_path(data_dir, "2026-09")
    link.symlink_to(secret)
    said: list[str] = []
    stop = Stopper()
    shipper = _Passes(
        data_dir, pg_url, ensure_source(data_dir), say=said.append, limit=40, stopper=stop
    )
    try:
        report = shipper.follow(stop, interval=0.001)
    finally:
        stop.close()
    assert shipper.passes == 40
    assert list(report.problems) == [str(link)]
    assert "symbolic link" in report.problems[str(link)]
    assert [message for message in said if "not shipped" in message] == [report.problems[str(link)]]
    assert report.total().loaded == 2


# --- the command -----------------------------------------------------------------------------


def test_dry_run_says_what_is_behind_and_moves_nothing(pg_url: str, data_dir: Path) -> None:
    lines = month_lines("2026-10", 3)
    write_shard(data_dir, "2026-10", lines, end=b'{"partial')
    dry = ship(pg_url, data_dir, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    behind = len(b"".join(lines))
    assert re.search(rf"2026-10\.jsonl +{behind} +3  the start\n", dry.stdout), dry.stdout
    assert "as a new source" in dry.stdout
    assert not (data_dir / SOURCE_FILE).exists()
    assert rows(pg_url, "SELECT to_regclass('mantis.runs')") == [(None,)]
    shipped(ship(pg_url, data_dir))
    again = ship(pg_url, data_dir, "--dry-run")
    assert re.search(rf"2026-10\.jsonl +0 +0  offset {behind}\n", again.stdout), again.stdout


def test_the_url_comes_from_the_environment(pg_url: str, data_dir: Path) -> None:
    write_shard(data_dir, "2026-10", month_lines("2026-10", 2))
    result = ship(None, data_dir, env={"MANTIS_DATABASE_URL": pg_url})
    assert shipped(result)["total"] == (2, 0, 0)


def test_without_a_url_it_is_a_usage_error(data_dir: Path) -> None:
    result = ship(None, data_dir, env={"MANTIS_DATABASE_URL": ""})
    assert result.returncode == 2 and "no database" in result.stderr


def test_bad_label_is_a_usage_error(pg_url: str, data_dir: Path) -> None:
    result = ship(pg_url, data_dir, "--label", "pod\x1b[2J")
    assert result.returncode == 2 and "control characters" in result.stderr


def test_a_database_that_is_down_fails_clearly_without_echoing_the_password(
    data_dir: Path, short_tmp: Path
) -> None:
    write_shard(data_dir, "2026-10", month_lines("2026-10", 2))
    url = f"postgresql://mantis:hunter2@/fleet?host={short_tmp}"
    result = ship(url, data_dir)
    assert result.returncode == 1
    assert f"cannot ship to database fleet on {short_tmp}" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "url",
    ["user:s3cretpw@host/db", "postgresql://u:s3cret%zzpw@host/db"],
    ids=["no-scheme", "bad-escape"],
)
@pytest.mark.parametrize(
    "command",
    [["runs", "ship"], ["runs", "ship", "--dry-run"], ["db", "status"], ["runs", "stats", "wf"]],
    ids=["ship", "dry-run", "db-status", "stats"],
)
def test_an_unparsable_url_is_never_echoed(url: str, command: list[str], data_dir: Path) -> None:
    """libpq quotes the text of a URL it cannot parse, password and all."""
    write_shard(data_dir, "2026-10", month_lines("2026-10", 1))
    where = ["--db", url] if command[-1] in ("status", "wf") else ["--to", url]
    args = [*command, *where]
    if command[0] == "runs":
        args += ["--data-dir", str(data_dir)] if command[1] == "ship" else []
    result = subprocess.run([str(MANTIS), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "s3cret" not in result.stdout + result.stderr, result.stderr
    assert "cannot be parsed" in result.stderr, result.stderr


def test_a_schema_newer_than_this_version_is_refused(pg_url: str, data_dir: Path) -> None:
    write_shard(data_dir, "2026-10", month_lines("2026-10", 1))
    shipped(ship(pg_url, data_dir))
    execute(pg_url, "INSERT INTO mantis.schema_version (version) VALUES (99)")
    result = ship(pg_url, data_dir)
    assert result.returncode == 1 and "schema is version 99, newer" in result.stderr


def test_label_given_again_is_the_sources_new_label(pg_url: str, data_dir: Path) -> None:
    write_shard(data_dir, "2026-10", month_lines("2026-10", 1))
    shipped(ship(pg_url, data_dir, "--label", "first"))
    shipped(ship(pg_url, data_dir, "--label", "renamed"))
    assert rows(pg_url, "SELECT label FROM mantis.sources") == [("renamed",)]
    assert json.loads((data_dir / SOURCE_FILE).read_text())["label"] == "first"


def test_db_init_and_status(pg_url: str, data_dir: Path) -> None:
    from click.testing import CliRunner

    from mantisd.cli import mantis

    runner = CliRunner()
    init = runner.invoke(mantis, ["db", "init", "--db", pg_url])
    assert init.exit_code == 0 and f"mantis schema version {LATEST} in database" in init.output
    write_shard(data_dir, "2026-10", [*month_lines("2026-10", 3), b"junk\n"])
    shipped(ship(pg_url, data_dir, "--label", "pod-a"))
    status = runner.invoke(mantis, ["db", "status", "--db", pg_url])
    assert status.exit_code == 0, status.output
    source = read_source(data_dir)
    assert source is not None
    (entry,) = [text for text in status.output.splitlines() if text.startswith("pod-a")]
    assert entry.split()[:4] == ["pod-a", str(source.source_id), "3", "1"]


def test_a_linked_runs_log_is_refused_cleanly(pg_url: str, data_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write_shard(elsewhere, "2026-10", month_lines("2026-10", 2))
    (data_dir / "runs_log").symlink_to(elsewhere / "runs_log")
    result = ship(pg_url, data_dir)
    assert result.returncode == 1
    assert (
        result.stderr.startswith("Error: cannot read the run log in")
        and "Traceback" not in result.stderr
    )


def test_a_row_from_a_clock_that_ran_ahead_is_shipped_not_dead_lettered(
    pg_url: str, data_dir: Path
) -> None:
    """A pod whose clock ran fast accepted a row finished 'tomorrow'; shipped days later, or
    from a copy on another host, it is still a stored row: the shipper does not judge it by
    its own clock (the file readers count it too)."""
    from mantisd.schema import validate

    ahead = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    row = make_row(finished_at=utc(ahead), created_at=utc(ahead - dt.timedelta(minutes=1)))
    write_shard(data_dir, f"{ahead:%Y-%m}", [validate(row, check_future=False).line])
    write_shard(data_dir, "2026-10", month_lines("2026-10", 2))
    assert shipped(ship(pg_url, data_dir))["total"] == (3, 0, 0)
    assert row["run_id"] in run_ids(pg_url)


def test_a_number_out_of_range_before_a_syntax_error_is_a_dead_letter(
    pg_url: str, data_dir: Path
) -> None:
    good = month_lines("2026-10", 2)
    write_shard(data_dir, "2026-10", [good[0], b'{"a": 1e999 x}\n', good[1]])
    assert shipped(ship(pg_url, data_dir))["total"] == (2, 0, 1)
