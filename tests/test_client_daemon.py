"""mantis_client against a real `mantisd` process: delivered, restarted, refusing, failing.

Every daemon here is the real one (`tests/daemon_process.running_daemon`) on a temporary socket
and data dir; its storage error comes from a shard on a really full disk (`tests/full_disk.py`).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mantis_client import Client, Outcome, append
from mantisd.paths import shard_path
from mantisd.reader import Scanner, ScanReport, StatRow, json_needle
from tests.daemon_process import running_daemon, wait_for
from tests.full_disk import shard_on_a_full_disk
from tests.rows import RowFactory
from tests.test_client import ABSENT_BOUND_S, ABSENT_CALLS, lines_on_disk, run_ids_on_disk

ROOT = Path(__file__).resolve().parent.parent


def test_daemon_up_delivers_and_the_row_is_in_the_shard_once(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    rows = [row_factory(), row_factory()]
    with running_daemon(short_tmp / "d.sock", data_dir) as daemon:
        with Client(socket_path=daemon.socket, data_dir=data_dir) as client:
            results = [
                append(rows[0], socket_path=daemon.socket, data_dir=data_dir),
                client.append(rows[1]),
            ]
        assert [r.outcome for r in results] == [Outcome.DELIVERED] * 2
        # Acknowledged means durable: on disk before the daemon is even stopped.
        assert sorted(run_ids_on_disk(data_dir)) == sorted(r["run_id"] for r in rows)
        assert daemon.status()["rows_written"] == 2
    assert sorted(run_ids_on_disk(data_dir)) == sorted(r["run_id"] for r in rows)


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_one_client_survives_a_daemon_restart_between_two_appends(
    stop_signal: signal.Signals, short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    first, second = row_factory(), row_factory()
    client = Client(socket_path=short_tmp / "d.sock", data_dir=data_dir)
    with running_daemon(short_tmp / "d.sock", data_dir, expect_exit=None) as daemon:
        assert client.append(first).outcome is Outcome.DELIVERED
        daemon.stop(stop_signal)  # the client's connection is now dead
    with running_daemon(short_tmp / "d.sock", data_dir):  # a stale socket file is replaced
        result = client.append(second)
    client.close()
    # The dead connection was retried once on a fresh one: the new daemon took the row.
    assert result.outcome is Outcome.DELIVERED, result
    assert sorted(run_ids_on_disk(data_dir)) == sorted([first["run_id"], second["run_id"]])


def test_a_row_beyond_the_daemon_line_limit_is_written_directly(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """A valid row too long for the daemon (`limit`) is still durable, and the client's next
    append on the same connection is delivered normally."""
    big, small = row_factory(error="x" * 100_000), row_factory()
    with (
        running_daemon(short_tmp / "d.sock", data_dir) as daemon,
        Client(socket_path=daemon.socket, data_dir=data_dir) as client,
    ):
        result = client.append(big)
        assert result.outcome is Outcome.WRITTEN_DIRECTLY, result
        assert "limit" in result.detail
        assert client.append(small).outcome is Outcome.DELIVERED
    assert sorted(run_ids_on_disk(data_dir)) == sorted([big["run_id"], small["run_id"]])


def test_client_reconnects_after_the_daemon_closes_an_idle_connection(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    with (
        running_daemon(short_tmp / "d.sock", data_dir, "--idle-timeout", "0.2") as daemon,
        Client(socket_path=daemon.socket, data_dir=data_dir) as client,
    ):
        assert client.append(row_factory()).outcome is Outcome.DELIVERED
        wait_for(lambda: daemon.status()["connections"] == 1)  # only status's own connection
        assert client.append(row_factory()).outcome is Outcome.DELIVERED
    assert len(lines_on_disk(data_dir)) == 2


def test_daemon_storage_error_makes_the_client_write_directly(
    short_tmp: Path, tmp_path: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """The daemon's shard is on a full disk (ENOSPC); the client's own data dir is writable."""
    row = row_factory()
    daemon_dir = tmp_path / "daemon-data"
    with (
        shard_on_a_full_disk(shard_path(daemon_dir, row["finished_at"][:7])),
        running_daemon(short_tmp / "d.sock", daemon_dir) as daemon,
    ):
        result = append(row, socket_path=daemon.socket, data_dir=data_dir)
        assert daemon.status()["storage_errors"] >= 1
    assert result.outcome is Outcome.WRITTEN_DIRECTLY
    assert "daemon replied storage" in result.detail
    assert run_ids_on_disk(data_dir) == [row["run_id"]]


def test_daemon_limit_reply_makes_the_client_write_directly(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    row = row_factory(notes="x" * 512)  # an extra key: longer than the daemon's line limit
    with running_daemon(short_tmp / "d.sock", data_dir, "--max-line-bytes", "256") as daemon:
        result = append(row, socket_path=daemon.socket, data_dir=data_dir)
    assert result.outcome is Outcome.WRITTEN_DIRECTLY
    assert "daemon replied limit" in result.detail
    assert run_ids_on_disk(data_dir) == [row["run_id"]]


def test_daemon_at_its_connection_limit_makes_the_client_write_directly(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    row = row_factory()
    with (
        running_daemon(short_tmp / "d.sock", data_dir, "--max-connections", "1") as daemon,
        Client(socket_path=daemon.socket, data_dir=data_dir) as holder,
    ):
        assert holder.append(row_factory()).outcome is Outcome.DELIVERED  # holds the one slot
        with Client(socket_path=daemon.socket, data_dir=data_dir) as refused:
            result = refused.append(row)
    assert result.outcome is Outcome.WRITTEN_DIRECTLY
    assert "daemon replied unavailable" in result.detail
    assert len(lines_on_disk(data_dir)) == 2


_NOBODY_APPENDS = """
import json, sys, time
from mantis_client import append
socket_path, data_dir = sys.argv[1:3]
out = []
for row in json.load(sys.stdin):
    start = time.perf_counter()
    result = append(row, socket_path=socket_path, data_dir=data_dir)
    out.append([result.outcome.value, result.detail, time.perf_counter() - start])
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user (setpriv)")
def test_permission_denied_on_the_socket_writes_directly_within_50ms(
    short_tmp: Path, row_factory: RowFactory
) -> None:
    """A live daemon whose socket (mode 000) the runtime's user may not open."""
    short_tmp.chmod(0o755)
    data_dir = short_tmp / "data"
    data_dir.mkdir()
    os.chown(data_dir, 65534, 65534)  # the runtime's user can write its fallback here
    rows = [row_factory() for _ in range(ABSENT_CALLS)]
    with running_daemon(short_tmp / "d.sock", short_tmp / "daemon", "--socket-mode", "000") as d:
        proc = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
            + ["-c", _NOBODY_APPENDS, str(d.socket), str(data_dir)],
            input=json.dumps(rows),
            capture_output=True,
            text=True,
            timeout=60,
            # PYTHONPATH: set by conftest when nobody cannot reach this checkout
            env={k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH")}
            | {"HOME": str(data_dir)},
        )
        assert d.status()["rows_written"] == 0
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [outcome for outcome, _, _ in results] == ["written_directly"] * ABSENT_CALLS
    assert "Permission denied" in results[0][1]
    assert sorted(run_ids_on_disk(data_dir)) == sorted(r["run_id"] for r in rows)
    # Median of several calls: see ABSENT_BOUND_S.
    assert statistics.median(elapsed for _, _, elapsed in results) < ABSENT_BOUND_S, results


# --- many writers across a daemon stop ------------------------------------------------------

WORKFLOW = "default__client-many-writers"
PROCESSES = 4
THREADS = 4
ROWS_PER_PHASE = 8  # per thread: this many with the daemon up, as many again with it stopped

_WORKER = """
import json, sys, threading, collections
from mantis_client import append
from tests.rows import make_row
name, socket_path, data_dir, threads, rows, workflow = sys.argv[1:]
threads, rows = int(threads), int(rows)
outcomes = collections.Counter()

def phase(label):
    def work(t):
        for i in range(rows):
            row = make_row(run_id=f"{name}-t{t}-{label}{i}", workflow_id=workflow)
            result = append(row, timeout=10, socket_path=socket_path, data_dir=data_dir)
            outcomes[label + ":" + result.outcome.value] += 1
    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for thread in pool: thread.start()
    for thread in pool: thread.join()

phase("up")
print("half", flush=True)
sys.stdin.readline()
phase("down")
print(json.dumps(outcomes), flush=True)
"""


def test_many_threads_and_processes_across_a_daemon_stop_lose_nothing(
    short_tmp: Path, data_dir: Path
) -> None:
    """Half the rows go in while the daemon runs, half after it stopped: all land, once each."""
    socket_path = short_tmp / "d.sock"
    with running_daemon(socket_path, data_dir):
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, f"p{p}", str(socket_path), str(data_dir)]
                + [str(THREADS), str(ROWS_PER_PHASE), WORKFLOW],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            for p in range(PROCESSES)
        ]
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline() == "half\n"
    outcomes: collections.Counter[str] = collections.Counter()
    for worker in workers:
        out, _ = worker.communicate("go\n", timeout=60)
        assert worker.returncode == 0
        outcomes.update(json.loads(out))
    per_phase = PROCESSES * THREADS * ROWS_PER_PHASE
    assert outcomes == {"up:delivered": per_phase, "down:written_directly": per_phase}

    lines = lines_on_disk(data_dir)
    assert all(line.startswith(b"{") and line.endswith(b"}") for line in lines)
    ids = collections.Counter(json.loads(line)["run_id"] for line in lines)
    assert len(ids) == 2 * per_phase and set(ids.values()) == {1}
    report = ScanReport()
    scanned = list(Scanner(StatRow).scan(data_dir, report, prefilter=json_needle(WORKFLOW)))
    assert len(scanned) == 2 * per_phase
    assert (report.bad_lines, report.duplicates) == (0, 0)
    stats = subprocess.run(
        [sys.executable, "-c", "from mantisd.cli import main; main()", "runs", "stats", WORKFLOW]
        + ["--last", str(10 * per_phase), "--json", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["run_count"] == 2 * per_phase


def test_threads_sharing_one_client_while_the_daemon_stops(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """The stop lands mid-stream: each row is delivered or written directly, none lost."""
    results: list[Any] = []
    client = Client(socket_path=short_tmp / "d.sock", data_dir=data_dir, timeout=10)
    rows = [row_factory() for _ in range(120)]
    with running_daemon(short_tmp / "d.sock", data_dir) as daemon:

        def work(chunk: list[dict[str, Any]]) -> None:
            for row in chunk:
                results.append(client.append(row))
                time.sleep(0.001)

        threads = [threading.Thread(target=work, args=(rows[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(results) >= 20)
        daemon.stop()
    for thread in threads:
        thread.join()
    client.close()
    assert {r.outcome for r in results} <= {Outcome.DELIVERED, Outcome.WRITTEN_DIRECTLY}
    assert len(results) == len(rows)
    ids = collections.Counter(run_ids_on_disk(data_dir))
    assert set(ids) == {r["run_id"] for r in rows}
