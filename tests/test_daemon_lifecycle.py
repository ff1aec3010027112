"""mantisd's life: systemd readiness and sockets, SIGTERM drain, kill -9 and restart."""

from __future__ import annotations

import collections
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.daemon_process import all_run_ids, running_daemon, send_rows, wait_for
from tests.rows import RowFactory

OK = {"ok": True}


class NotifyListener:
    """The test's own `$NOTIFY_SOCKET`: collects what the daemon tells systemd."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.05)
        self.messages: list[str] = []

    def collect(self) -> list[str]:
        """What arrived so far (listening up to 0.2 s for more)."""
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                break
        return self.messages

    def wait_for(self, field: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(field in m.split("\n") for m in self.collect()):
                return
        raise AssertionError(f"no {field} in {self.messages}")


@pytest.fixture(params=["path", "abstract"])
def notify(request: pytest.FixtureRequest, short_tmp: Path) -> Iterator[NotifyListener]:
    address = str(short_tmp / "notify") if request.param == "path" else f"@mt-{uuid.uuid4()}"
    listener = NotifyListener(address)
    yield listener
    listener.sock.close()


def test_sd_notify_ready_watchdog_stopping(
    notify: NotifyListener, short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "200000"}
    with running_daemon(short_tmp / "m.sock", data_dir, env=env) as d:
        notify.wait_for("READY=1")
        assert any(f"MAINPID={d.pid}" in m for m in notify.messages)
        notify.wait_for("WATCHDOG=1")
        assert d.send_rows([row_factory()]) == [OK]
        assert not any("STOPPING=1" in m for m in notify.collect())
    notify.wait_for("STOPPING=1")


def test_socket_activation_inherited_fd(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    path = short_tmp / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    # What systemd does: the socket as fd 3, LISTEN_PID naming the service's own pid.
    command = [
        "sh",
        "-c",
        'LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=mantisd.socket exec "$@"',
        "sh",
        sys.executable,
        "-m",
        "mantisd.daemon",
        "--data-dir",
        str(data_dir),
    ]
    try:
        with running_daemon(
            path,
            data_dir,
            command=command,
            pass_fds=[3],
            preexec_fn=lambda: os.dup2(listener.fileno(), 3),
        ) as d:
            assert f"ready on {path}" in d.stderr
            rows = [row_factory() for _ in range(20)]
            assert d.send_rows(rows) == [OK] * 20
            assert all_run_ids(data_dir) == [r["run_id"] for r in rows]
        assert path.exists()  # systemd's socket file: not ours to remove
    finally:
        listener.close()


def test_listen_pid_of_another_process_is_ignored(short_tmp: Path, data_dir: Path) -> None:
    path = short_tmp / "own.sock"
    with running_daemon(
        path, data_dir, env={"LISTEN_PID": "1", "LISTEN_FDS": "1"}
    ) as d:  # fd 3 is not for us: bind our own path
        assert "LISTEN_PID=1 is not our pid" in d.stderr
        assert d.status()["connections"] == 1


def test_systemd_socket_activate(short_tmp: Path, data_dir: Path, row_factory: RowFactory) -> None:
    path = short_tmp / "sa.sock"
    command = [
        "systemd-socket-activate",
        "-l",
        str(path),
        "-E",
        f"MANTIS_DATA_DIR={data_dir}",
        sys.executable,
        "-m",
        "mantisd.daemon",
    ]
    rows = [row_factory() for _ in range(5)]
    replies: list[dict[str, Any]] = []

    def first_client() -> None:  # systemd-socket-activate starts mantisd on the first connection
        wait_for(path.exists)
        replies.extend(send_rows(path, rows))

    client = threading.Thread(target=first_client)
    client.start()
    with running_daemon(path, data_dir, command=command) as d:
        client.join(30)
        assert replies == [OK] * 5
        assert "Communication attempt" in d.stderr
    assert all_run_ids(data_dir) == [r["run_id"] for r in rows]


class Pipeliner(threading.Thread):
    """A client pipelining rows with a bounded window; remembers which rows were acked."""

    def __init__(self, socket_path: Path, row_factory: RowFactory, total: int) -> None:
        super().__init__(daemon=True)
        self.socket_path = socket_path
        self.rows = [row_factory() for _ in range(total)]
        self.acked: list[str] = []
        self.other_replies: list[dict[str, Any]] = []
        self.started_replying = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except OSError:
            pass  # the daemon went away: what was acked is what counts
        finally:
            self.started_replying.set()

    def _run(self) -> None:
        window = 128
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(20)
            sock.connect(str(self.socket_path))
            reader = sock.makefile("rb")
            sent = answered = 0
            while answered < len(self.rows):
                while sent < len(self.rows) and sent - answered < window:
                    sock.sendall(msgspec.json.encode(self.rows[sent]) + b"\n")
                    sent += 1
                line = reader.readline()
                if not line:
                    return
                reply = msgspec.json.decode(line)
                if reply == OK:
                    self.acked.append(self.rows[answered]["run_id"])
                else:
                    self.other_replies.append(reply)
                answered += 1
                self.started_replying.set()


def _check_shards(data_dir: Path) -> None:
    """Every line parses; only a shard's very last line may be torn (no `\\n`)."""
    for shard in (data_dir / "runs_log").glob("*.jsonl"):
        lines = shard.read_bytes().splitlines(keepends=True)
        for line in lines:
            if line.endswith(b"\n"):
                msgspec.json.decode(line)
            else:
                assert line is lines[-1]


def test_sigterm_with_rows_in_flight(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    with running_daemon(short_tmp / "m.sock", data_dir) as d:
        clients = [Pipeliner(d.socket, row_factory, 4000) for _ in range(4)]
        for c in clients:
            c.start()
        for c in clients:
            c.started_replying.wait(20)
        d.send_signal(signal.SIGTERM)
        assert d.proc.wait(30) == 0
        for c in clients:
            c.join(30)
    acked = [run_id for c in clients for run_id in c.acked]
    assert acked
    on_disk = set(all_run_ids(data_dir))
    assert set(acked) <= on_disk
    assert all(r["kind"] == "unavailable" for c in clients for r in c.other_replies)
    _check_shards(data_dir)


@pytest.mark.slow
def test_kill_9_under_load_then_restart_after_torn_tail(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    path = short_tmp / "m.sock"
    with running_daemon(path, data_dir, expect_exit=None) as d:
        clients = [Pipeliner(d.socket, row_factory, 50_000) for _ in range(4)]
        for c in clients:
            c.start()
        wait_for(lambda: sum(len(c.acked) for c in clients) > 2000, timeout=30)
        d.send_signal(signal.SIGKILL)
        assert d.proc.wait(10) == -signal.SIGKILL
        for c in clients:
            c.join(30)
    acked = [run_id for c in clients for run_id in c.acked]
    assert set(acked) <= set(all_run_ids(data_dir))
    _check_shards(data_dir)

    # A crash in the middle of a write() leaves a torn tail; the next daemon must not glue
    # its rows onto it.
    (shard,) = (data_dir / "runs_log").glob("*.jsonl")
    with shard.open("ab") as f:
        f.write(b'{"schema_version":1,"run_id":"torn-')
    with running_daemon(path, data_dir) as d:
        rows = [row_factory() for _ in range(10)]
        assert d.send_rows(rows) == [OK] * 10
    lines = shard.read_bytes().splitlines(keepends=True)
    assert lines[-11] == b'{"schema_version":1,"run_id":"torn-\n'
    assert [msgspec.json.decode(line)["run_id"] for line in lines[-10:]] == [
        r["run_id"] for r in rows
    ]
    assert set(acked) <= set(all_run_ids(data_dir))


@pytest.mark.slow
def test_watchdog_pings_stop_while_the_writer_is_stuck(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """A batch stuck in fsync longer than the watchdog period withholds WATCHDOG=1."""
    notify = NotifyListener(str(short_tmp / "notify"))
    # strace counts per thread: the writer's thread fsyncs #1 the new shard's directory, #2 the
    # first row; #3 (the second row's) hangs for 2.5 s.
    wrapper = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync"]
    wrapper += ["-e", "inject=fsync:delay_enter=2500000:when=3"]
    env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "400000"}
    with running_daemon(short_tmp / "m.sock", data_dir, wrapper=wrapper, env=env) as d:
        notify.wait_for("READY=1")
        assert d.send_rows([row_factory()]) == [OK]
        stuck = threading.Thread(target=d.send_rows, args=([row_factory()],))
        stuck.start()
        wait_for(lambda: d.status()["writer_busy"], timeout=5)
        time.sleep(0.5)  # past one watchdog period: pings must have stopped by now
        notify.collect()  # drain what was sent before
        notify.messages.clear()
        time.sleep(1.0)
        assert "WATCHDOG=1" not in notify.collect()
        stuck.join(10)
        notify.messages.clear()
        notify.wait_for("WATCHDOG=1", timeout=5)  # progress again: pings resume
    assert "watchdog pings withheld" in d.stderr
    notify.sock.close()


@pytest.mark.slow
def test_sigterm_while_the_writer_is_stuck_answers_and_drains(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """Rows queued behind a slow fsync are still written and acked; rows the full queue could
    not take are answered `unavailable`; exit 0."""
    wrapper = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync"]
    wrapper += ["-e", "inject=fsync:delay_enter=1500000:when=3"]
    args = ("--queue-size", "16", "--batch-max-rows", "8")
    with running_daemon(short_tmp / "m.sock", data_dir, *args, wrapper=wrapper) as d:
        assert d.send_rows([row_factory()]) == [OK]
        rows = [row_factory() for _ in range(200)]
        replies: list[dict[str, Any]] = []
        client = threading.Thread(target=lambda: replies.extend(d.send_rows(rows)))
        client.start()
        wait_for(lambda: d.status()["queue_depth"] == 16, timeout=10)
        d.send_signal(signal.SIGTERM)
        client.join(30)
        assert d.proc.wait(30) == 0
    kinds = collections.Counter("ok" if r == OK else r["kind"] for r in replies)
    assert kinds["ok"] >= 16 and kinds["unavailable"] >= 1
    assert set(kinds) <= {"ok", "unavailable"}
    acked = [row["run_id"] for row, reply in zip(rows, replies, strict=False) if reply == OK]
    assert set(acked) <= set(all_run_ids(data_dir))


def test_sigterm_while_a_shard_is_locked_elsewhere_stops_within_the_drain_timeout(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """The writer waits up to `--lock-timeout` for a shard another process holds; SIGTERM must
    still stop the daemon about `--drain-timeout` later (it used to wait the whole lock
    timeout, past systemd's TimeoutStopSec), the waiting rows answered with a storage error."""
    from tests.test_daemon_memory import shard_locked, this_shard

    args = ("--lock-timeout", "60", "--drain-timeout", "1")
    with running_daemon(short_tmp / "m.sock", data_dir, *args) as d:
        shard = this_shard(d, row_factory())
        replies: list[dict[str, Any]] = []
        with shard_locked(shard):
            client = threading.Thread(target=lambda: replies.extend(d.send_rows([row_factory()])))
            client.start()
            wait_for(lambda: d.status()["writer_blocked_s"] > 0, timeout=20)
            signalled = time.monotonic()
            d.send_signal(signal.SIGTERM)
            code = d.proc.wait(30)
            stopped_after = time.monotonic() - signalled
            client.join(10)
    assert code == 0 and stopped_after < 20, (code, stopped_after)
    assert len(replies) == 1 and replies[0]["kind"] == "storage", replies
    assert "mantisd is stopping" in replies[0]["error"]
