"""Storage failures made for real under a running mantisd: the rows concerned get storage
errors, the daemon keeps serving, and rows succeed again once the cause is gone."""

from __future__ import annotations

import datetime as dt
import os
import resource
import shutil
import signal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mantisd.daemon.writer import HOLD_IDLE
from tests.daemon_process import all_run_ids, running_daemon, shard_lines, wait_for
from tests.full_disk import shard_on_a_full_disk
from tests.proc import fds_on
from tests.rows import RowFactory, utc

OK = {"ok": True}


def month_of(row: dict[str, Any]) -> str:
    return str(row["finished_at"][:7])


def last_month_row(row_factory: RowFactory) -> dict[str, Any]:
    first = dt.datetime.now(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    finished = first - dt.timedelta(hours=3)
    return row_factory(finished_at=utc(finished), created_at=utc(finished - dt.timedelta(hours=1)))


def assert_storage_errors(replies: list[dict[str, Any]], count: int) -> None:
    assert len(replies) == count
    assert all(r["ok"] is False and r["kind"] == "storage" for r in replies), replies


def test_shard_on_a_full_disk(short_tmp: Path, data_dir: Path, row_factory: RowFactory) -> None:
    """This month's shard on a full disk (ENOSPC, a bind-mounted file of a full tmpfs: a link
    to /dev/full would be moved aside, design.md "Trust"); last month's shard is fine."""
    now_rows = [row_factory() for _ in range(5)]
    old_rows = [last_month_row(row_factory) for _ in range(5)]
    shard = data_dir / "runs_log" / f"{month_of(now_rows[0])}.jsonl"
    with (
        shard_on_a_full_disk(shard) as free,
        running_daemon(short_tmp / "m.sock", data_dir) as d,
    ):
        mixed = [row for pair in zip(now_rows, old_rows, strict=True) for row in pair]
        replies = d.send_rows(mixed)
        # Exactly this month's rows failed, each reply in its request's place.
        assert_storage_errors(replies[0::2], 5)
        assert "No space left on device" in replies[0]["error"]
        assert replies[1::2] == [OK] * 5
        assert all_run_ids(data_dir) == [r["run_id"] for r in old_rows]
        status = d.status()
        assert status["storage_errors"] >= 1 and status["rows_failed"] == 5
        free()
        assert d.send_rows(now_rows) == [OK] * 5
        assert shard.is_file() and not shard.is_symlink()
        assert [msgspec.json.decode(x)["run_id"] for x in shard.read_bytes().splitlines()] == [
            r["run_id"] for r in now_rows
        ]
    assert d.stderr.count("storage error") == 1  # logged once per episode
    assert "storage recovered" in d.stderr


def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a short write, not a killed daemon
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def test_short_write_under_rlimit_fsize_is_rolled_back(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    limit = 64 * 1024
    with running_daemon(
        short_tmp / "m.sock", data_dir, preexec_fn=lambda: _limit_file_size(limit)
    ) as d:
        first = [row_factory() for _ in range(60)]  # ~40 KiB
        assert d.send_rows(first) == [OK] * 60
        shard = data_dir / "runs_log" / f"{month_of(first[0])}.jsonl"
        before = shard.read_bytes()
        big = row_factory(padding="p" * 40_000)  # crosses the limit: the write comes up short
        (reply,) = d.send_rows([big])
        assert reply["kind"] == "storage" and "short write" in reply["error"]
        assert shard.read_bytes() == before  # the partial bytes were truncated away
        small = row_factory()
        assert d.send_rows([small]) == [OK]  # still fits under the limit
        resource.prlimit(d.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        assert d.send_rows([big]) == [OK]
    assert all_run_ids(data_dir) == [r["run_id"] for r in [*first, small, big]]


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_fsync_eio_is_not_acknowledged(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    # strace counts per thread; the writer's worker thread fsyncs #1 the new shard's directory
    # (before any row goes in), #2 the first row, and #3, which fails, the second row.
    wrapper = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync"]
    wrapper += ["-e", "inject=fsync:error=EIO:when=3"]
    rows = [row_factory() for _ in range(3)]
    with running_daemon(short_tmp / "m.sock", data_dir, wrapper=wrapper) as d:
        assert d.send_rows([rows[0]]) == [OK]
        (reply,) = d.send_rows([rows[1]])
        assert reply["kind"] == "storage" and "fsync failed" in reply["error"]
        assert "Input/output error" in reply["error"]
        assert d.send_rows([rows[2]]) == [OK]
    # The row whose fsync failed is not there, even though a later fsync succeeded.
    assert all_run_ids(data_dir) == [rows[0]["run_id"], rows[2]["run_id"]]


@pytest.mark.parametrize("how", ["rename", "delete"])
def test_shard_moved_away_while_running(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory, how: str
) -> None:
    with running_daemon(short_tmp / "m.sock", data_dir) as d:
        first, second = row_factory(), row_factory()
        assert d.send_rows([first]) == [OK]
        shard = data_dir / "runs_log" / f"{month_of(first)}.jsonl"
        keep = os.open(shard, os.O_RDONLY)  # the old inode, even when unlinked
        try:
            if how == "rename":
                shard.rename(shard.with_suffix(".archived"))
            else:
                shard.unlink()
            assert d.send_rows([second]) == [OK]
            assert os.pread(keep, 1 << 20, 0).count(b"\n") == 1  # nothing new in the old file
        finally:
            os.close(keep)
        assert [
            msgspec.json.decode(x)["run_id"] for x in shard_lines(data_dir, month_of(first))
        ] == [second["run_id"]]


def test_an_idle_daemon_lets_go_of_a_deleted_shard(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """The writer keeps the month it writes open between commits; a month deleted behind its
    back (retention, an operator) must not stay allocated once rows stop coming."""
    with running_daemon(short_tmp / "m.sock", data_dir) as d:
        row = row_factory()
        assert d.send_rows([row]) == [OK]
        shard = (data_dir / "runs_log" / f"{month_of(row)}.jsonl").resolve()
        assert fds_on(d.pid, shard) == [str(shard)], "held open between commits"
        shard.unlink()
        wait_for(lambda: not fds_on(d.pid, shard), timeout=HOLD_IDLE + 20)
        assert d.send_rows([row_factory()]) == [OK]
        assert len(shard_lines(data_dir, month_of(row))) == 1


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to switch to an unprivileged user")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv is not installed")
def test_data_dir_without_write_permission(short_tmp: Path, row_factory: RowFactory) -> None:
    nobody = 65534
    short_tmp.chmod(0o755)
    data_dir = short_tmp / "data"
    data_dir.mkdir(mode=0o755)  # root's: nobody may not create runs_log/ in it
    sock_dir = short_tmp / "sock"
    sock_dir.mkdir()
    os.chown(sock_dir, nobody, nobody)
    wrapper = ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups"]
    with running_daemon(sock_dir / "m.sock", data_dir, wrapper=wrapper) as d:
        assert "rows will get storage errors" in d.stderr
        rows = [row_factory() for _ in range(3)]
        replies = d.send_rows(rows)
        assert_storage_errors(replies, 3)
        assert "Permission denied" in replies[0]["error"]
        assert not (data_dir / "runs_log").exists()
        os.chown(data_dir, nobody, nobody)  # the operator fixes the permission
        assert d.send_rows(rows) == [OK] * 3
    assert all_run_ids(data_dir) == [r["run_id"] for r in rows]
