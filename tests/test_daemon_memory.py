"""mantisd while another process holds a shard's lock: memory bounded in bytes, the wait seen
and bounded, and every acknowledged row on disk (issue 9, item 4)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mantisd.daemon.connection import RECEIVE_BYTES
from mantisd.paths import shard_path
from tests.daemon_process import (
    DaemonProcess,
    all_run_ids,
    encode_rows,
    running_daemon,
    send_rows,
    wait_for,
)
from tests.rows import RowFactory

OK = {"ok": True}
MiB = 1024 * 1024


@contextmanager
def shard_locked(shard: Path) -> Iterator[None]:
    """Another process holds the shard's `flock` (as `flock SHARD mv ...` would) until exit."""
    with subprocess.Popen(
        ["flock", str(shard), "sh", "-c", "echo locked; exec cat >/dev/null"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline() == b"locked\n"
            yield
        finally:
            holder.stdin.close()  # `cat` ends, then `flock`, and the lock goes with them
            holder.wait(10)


def this_shard(d: DaemonProcess, row: dict[str, Any]) -> Path:
    """The row's shard, made to exist (by a first row the daemon writes)."""
    assert d.send_rows([row]) == [OK]
    return shard_path(d.data_dir, row["finished_at"][:7])


class Pipeliner(threading.Thread):
    """One connection pipelining `rows`; `replies` once the daemon answered them all."""

    def __init__(self, socket_path: Path, rows: list[dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.socket_path = socket_path
        self.rows = rows
        self.replies: list[dict[str, Any]] = []

    def run(self) -> None:
        self.replies = send_rows(self.socket_path, self.rows, timeout=120)


def test_a_held_lock_is_reported_and_the_rows_written_once_it_is_released(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    with running_daemon(short_tmp / "m.sock", data_dir) as d:
        first = row_factory()
        shard = this_shard(d, first)
        rows = [row_factory() for _ in range(5)]
        with shard_locked(shard):
            client = Pipeliner(d.socket, rows)
            client.start()
            wait_for(lambda: d.status()["writer_blocked_s"] > 0, timeout=20)
            status = d.status()
            assert status["lock_waits"] == 1 and status["writer_busy"] is True
            assert "is locked by another process: 5 rows wait for it" in d.stderr
            assert all_run_ids(data_dir) == [first["run_id"]]  # nothing acknowledged yet
            assert client.is_alive()
        client.join(60)
        assert client.replies == [OK] * 5
        assert all_run_ids(data_dir) == [r["run_id"] for r in [first, *rows]]
        assert d.status()["writer_blocked_s"] == 0
        wait_for(lambda: "got the lock of" in d.stderr)


def test_a_lock_held_past_the_lock_timeout_answers_storage_errors(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    with running_daemon(short_tmp / "m.sock", data_dir, "--lock-timeout", "1") as d:
        first = row_factory()
        shard = this_shard(d, first)
        rows = [row_factory() for _ in range(3)]
        with shard_locked(shard):
            replies = d.send_rows(rows)
            assert [r.get("kind") for r in replies] == ["storage"] * 3
            assert (
                "another process held the shard's lock for 1s; not written" in replies[0]["error"]
            )
            status = d.status()
            assert status["rows_failed"] == 3 and status["storage_errors"] == 1
        assert all_run_ids(data_dir) == [first["run_id"]]  # refused rows were not written later
        assert d.send_rows(rows) == [OK] * 3
        assert all_run_ids(data_dir) == [r["run_id"] for r in [first, *rows]]
    assert "storage recovered" in d.stderr


def test_a_full_queue_holds_at_most_queue_max_bytes_and_slows_the_readers(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    budget = 2 * MiB
    # --max-inflight: this one connection's unanswered rows are not what stops its reader
    args = ("--queue-max-bytes", str(budget), "--max-inflight", "100000")
    with running_daemon(short_tmp / "m.sock", data_dir, *args) as d:
        shard = this_shard(d, row_factory())
        rows = [row_factory() for _ in range(12_000)]  # ~7.6 MB: more than the queue takes
        assert len(encode_rows(rows)) > 3 * budget
        with shard_locked(shard):
            client = Pipeliner(d.socket, rows)
            client.start()
            # Full, up to one batch (a receive and a partial line) short of the budget:
            batch = RECEIVE_BYTES + 64 * 1024
            wait_for(lambda: d.status()["queue_bytes"] > budget - batch, timeout=30)
            for _ in range(5):
                status = d.status()
                assert status["queue_bytes"] <= budget, status
                assert status["queue_depth"] < len(rows)
                time.sleep(0.1)
            assert client.is_alive()  # its reader waits: the rest is not taken
        client.join(60)
        assert client.replies == [OK] * len(rows)
        assert all_run_ids(data_dir)[1:] == [r["run_id"] for r in rows]


def vm_hwm_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_rss_stays_bounded_with_the_writer_stalled_by_a_held_lock(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """Issue 9's scenario: 8 connections pipeline 60 KB rows whose `cost_breakdown` holds
    20,000 empty objects (~1.5 MB each once decoded) while another process holds the shard's
    lock. The default daemon once reached 10 GB in 30 s; now its queue holds the lines (64 MiB
    by default), then the readers wait. Peak RSS < 300 MB; every row acknowledged once the lock
    is released, and on disk."""
    limit_mb = 300
    with running_daemon(short_tmp / "m.sock", data_dir) as d:
        first = row_factory()
        shard = this_shard(d, first)
        heavy = {"parts": [{}] * 20_000}
        clients = [
            Pipeliner(d.socket, [row_factory(cost_breakdown=heavy) for _ in range(200)])
            for _ in range(8)
        ]
        assert 60_000 < len(msgspec.json.encode(clients[0].rows[0])) < 64 * 1024
        with shard_locked(shard):
            for client in clients:
                client.start()
            deadline = time.monotonic() + 30  # bounded: stop watching once the queue is full
            full_since = None
            while time.monotonic() < deadline:
                peak = vm_hwm_mb(d.pid)
                assert peak < limit_mb, f"mantisd peaked at {peak:.0f} MB with the writer stalled"
                if full_since is None and d.status().get("queue_bytes", 0) > 60 * MiB:
                    full_since = time.monotonic()
                if full_since is not None and time.monotonic() - full_since > 3:
                    break
                time.sleep(0.1)
            assert full_since is not None, f"the queue never filled up: {d.status()}"
            assert all(client.is_alive() for client in clients)  # held back: backpressure
        for client in clients:
            client.join(120)
        assert vm_hwm_mb(d.pid) < limit_mb
        for client in clients:
            assert client.replies == [OK] * len(client.rows)
        expected = [first] + [row for client in clients for row in client.rows]
        assert sorted(all_run_ids(data_dir)) == sorted(r["run_id"] for r in expected)


def test_replies_held_for_a_client_that_never_reads_are_bounded_in_bytes(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """An `invalid` reply names the bad key, so it can be as long as its line: a client that
    sends such lines and never reads makes the daemon hold at most `MAX_REPLY_BYTES` of
    replies for it (and the kernel's socket buffers), then its reader waits."""
    key = "k" * 30_000
    bad = msgspec.json.encode(row_factory(wall_time_breakdown={key: -1.0})) + b"\n"
    assert len(bad) < 64 * 1024
    payload = bad * 700  # 21 MB of lines whose replies are ~30 KB each
    with running_daemon(short_tmp / "m.sock", data_dir) as d:
        with socket.socket(socket.AF_UNIX) as hog:
            hog.connect(str(d.socket))
            hog.setblocking(False)
            sent, stalled_since = 0, None
            while sent < len(payload):
                try:
                    sent += hog.send(payload[sent : sent + 65536])
                    stalled_since = None
                except BlockingIOError:
                    stalled_since = stalled_since or time.monotonic()
                    if time.monotonic() - stalled_since > 1.0:
                        break
                    time.sleep(0.05)
            # The replies the daemon holds, plus kernel buffers both ways and one receive:
            # megabytes, not the 700 x 30 KB that 1,024 unanswered rows would allow.
            assert sent < 8 * MiB, f"{sent / MiB:.1f} MB taken from a client that never reads"
            assert d.status()["connections"] == 2  # the hog and this status request
        assert d.send_rows([row_factory()]) == [OK]
