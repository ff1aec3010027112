"""mantis_client without a live mantisd: absent, stale, forbidden, hung and scripted daemons.

The daemon-backed cases (delivered, restart, storage error, many writers) are in
`test_client_daemon.py`. Here a "daemon" is either no daemon at all or `ProtocolServer`, a
real Unix-socket server that speaks the wire protocol with canned replies: the only way to
get a daemon that accepts and never answers, or that answers garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import math
import os
import signal
import socket
import socketserver
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest

import mantis_client
from mantis_client import (
    DEFAULT_TIMEOUT,
    MAX_TIMEOUT,
    AppendResult,
    Client,
    Outcome,
    append,
    append_async,
)
from mantisd.paths import list_shards, shard_path
from mantisd.schema import Row
from tests.full_disk import shard_on_a_full_disk
from tests.rows import RowFactory

#: The issue's bound for an absent daemon. Asserted on the median of several calls: the first
#: call pays one-off costs (the shard's directory, the shared client) and a shared 2-core
#: machine can deschedule any single call for tens of milliseconds; the median is the path.
ABSENT_BOUND_S = 0.050
ABSENT_CALLS = 5
#: Slack over `timeout` for a hung daemon: one direct write plus a noisy scheduler.
HUNG_MARGIN_S = 0.5


def lines_on_disk(data_dir: Path) -> list[bytes]:
    """Every line of every month shard."""
    return [line for _, path in list_shards(data_dir) for line in path.read_bytes().splitlines()]


def run_ids_on_disk(data_dir: Path) -> list[str]:
    return [json.loads(line)["run_id"] for line in lines_on_disk(data_dir)]


Responder = Callable[[bytes], bytes | None]


class ProtocolServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A real Unix-socket server: `respond(line)` gives each reply line (None: never answer).

    `close_after_reply` mimics the daemon's `limit` / `unavailable` replies, after which it
    closes the connection.
    """

    # server_close() joins the handler threads, after `stop` has cut their connections: a
    # test must not leave a thread behind (forking code elsewhere refuses to fork beside one).
    daemon_threads = False
    block_on_close = True

    def __init__(self, path: Path, respond: Responder, *, close_after_reply: bool = False):
        self.path = path
        self.respond = respond
        self.close_after_reply = close_after_reply
        self.received: list[bytes] = []
        self.connections = 0
        self.open_requests: set[socket.socket] = set()
        super().__init__(str(path), _LineHandler)

    def stop(self) -> None:
        self.shutdown()
        for request in list(self.open_requests):
            with contextlib.suppress(OSError):
                request.shutdown(socket.SHUT_RDWR)
        self.server_close()


class _LineHandler(socketserver.StreamRequestHandler):
    server: ProtocolServer

    def setup(self) -> None:
        super().setup()
        self.server.open_requests.add(self.request)

    def finish(self) -> None:
        self.server.open_requests.discard(self.request)
        with contextlib.suppress(OSError):
            super().finish()

    def handle(self) -> None:
        self.server.connections += 1
        try:
            for line in self.rfile:
                self.server.received.append(line)
                reply = self.server.respond(line)
                if reply is not None:
                    self.wfile.write(reply)
                    if self.server.close_after_reply:
                        return
        except OSError:
            pass  # the client gave up on us: exactly what several tests provoke


@pytest.fixture
def serve(short_tmp: Path) -> Iterator[Callable[..., ProtocolServer]]:
    """Start a `ProtocolServer` on a fresh socket path; stopped at teardown."""
    servers: list[ProtocolServer] = []

    def start(respond: Responder, **kwargs: Any) -> ProtocolServer:
        server = ProtocolServer(short_tmp / f"s{len(servers)}.sock", respond, **kwargs)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def never_answer(line: bytes) -> None:
    return None


def answer(reply: dict[str, Any]) -> Responder:
    encoded = json.dumps(reply).encode() + b"\n"
    return lambda line: encoded


def stale_socket(path: Path) -> Path:
    """A socket file whose listener is gone (a daemon that crashed without cleaning up)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    return path


def timed(call: Callable[..., AppendResult]) -> tuple[AppendResult, float]:
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


# --- daemon absent ------------------------------------------------------------------------


@pytest.mark.parametrize("socket_kind", ["missing", "stale", "directory"])
def test_absent_daemon_writes_directly_within_50ms(
    socket_kind: str, short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    path = short_tmp / "mantisd.sock"
    if socket_kind == "stale":
        stale_socket(path)
    elif socket_kind == "directory":
        path.mkdir()  # not a socket at all: connect fails with ECONNREFUSED
    rows = [row_factory() for _ in range(ABSENT_CALLS)]
    durations = []
    for row in rows:
        result, elapsed = timed(lambda row=row: append(row, socket_path=path, data_dir=data_dir))
        assert result.outcome is Outcome.WRITTEN_DIRECTLY, result
        assert str(path) in result.detail
        durations.append(elapsed)
    assert sorted(run_ids_on_disk(data_dir)) == sorted(r["run_id"] for r in rows)
    assert statistics.median(durations) < ABSENT_BOUND_S, durations


# --- daemon hung or answering oddly -------------------------------------------------------


def test_hung_daemon_returns_within_timeout_and_writes_row(
    serve: Callable[..., ProtocolServer], data_dir: Path, row_factory: RowFactory
) -> None:
    server = serve(never_answer)
    row = row_factory()
    with Client(socket_path=server.path, data_dir=data_dir) as client:
        result, elapsed = timed(lambda: client.append(row, timeout=0.3))
    assert result.outcome is Outcome.WRITTEN_DIRECTLY
    assert "timeout" in result.detail or "timed out" in result.detail
    assert elapsed < 0.3 + HUNG_MARGIN_S
    assert server.received == [lines_on_disk(data_dir)[0] + b"\n"]  # the same canonical line
    assert run_ids_on_disk(data_dir) == [row["run_id"]]


def test_threads_queued_behind_a_hung_daemon_still_return_within_timeout(
    serve: Callable[..., ProtocolServer], data_dir: Path, row_factory: RowFactory
) -> None:
    """One connection, one exchange at a time: waiting for it counts against the timeout."""
    server = serve(never_answer)
    client = Client(socket_path=server.path, data_dir=data_dir, timeout=0.3)
    rows = [row_factory() for _ in range(4)]
    elapsed: list[float] = []

    def worker(row: dict[str, Any]) -> None:
        result, took = timed(lambda: client.append(row))
        assert result.outcome is Outcome.WRITTEN_DIRECTLY
        elapsed.append(took)

    threads = [threading.Thread(target=worker, args=(row,)) for row in rows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    assert len(elapsed) == len(rows)
    assert max(elapsed) < 0.3 + HUNG_MARGIN_S
    assert sorted(run_ids_on_disk(data_dir)) == sorted(r["run_id"] for r in rows)


@pytest.mark.parametrize(
    ("reply", "close_after_reply"),
    [
        ({"ok": False, "kind": "storage", "error": "fsync failed: EIO"}, False),
        ({"ok": False, "kind": "limit", "error": "line longer than 65536 bytes"}, True),
        ({"ok": False, "kind": "unavailable", "error": "shutting down"}, True),
        ({"ok": False, "kind": "brand-new", "error": "a kind this client does not know"}, False),
    ],
)
def test_failure_replies_other_than_invalid_fall_back_to_direct_write(
    reply: dict[str, Any],
    close_after_reply: bool,
    serve: Callable[..., ProtocolServer],
    data_dir: Path,
    row_factory: RowFactory,
) -> None:
    server = serve(answer(reply), close_after_reply=close_after_reply)
    rows = [row_factory(), row_factory()]
    with Client(socket_path=server.path, data_dir=data_dir) as client:
        results = [client.append(row) for row in rows]
    assert [r.outcome for r in results] == [Outcome.WRITTEN_DIRECTLY] * 2
    assert reply["error"] in results[0].detail
    assert len(server.received) == 2  # the second row went to the daemon too
    assert sorted(run_ids_on_disk(data_dir)) == sorted(r["run_id"] for r in rows)


@pytest.mark.parametrize("garbage", [b"not json\n", b'{"status": 1}\n', b"[]\n"])
def test_unreadable_reply_falls_back_to_direct_write(
    garbage: bytes, serve: Callable[..., ProtocolServer], data_dir: Path, row_factory: RowFactory
) -> None:
    server = serve(lambda line: garbage)
    row = row_factory()
    with Client(socket_path=server.path, data_dir=data_dir) as client:
        result = client.append(row)
    assert result.outcome is Outcome.WRITTEN_DIRECTLY
    assert "unreadable reply" in result.detail
    assert run_ids_on_disk(data_dir) == [row["run_id"]]


def deeply_nested_reply(line: bytes) -> bytes:
    """`{"ok":true}` plus an extra key nested deeper than the reply parser recurses."""
    return b'{"ok":true,"extra":' + b"[" * 5000 + b"]" * 5000 + b"}\n"


@pytest.mark.parametrize("call", ["sync", "async"])
def test_an_unexpected_error_in_delivery_writes_directly_and_never_raises(
    call: str, serve: Callable[..., ProtocolServer], data_dir: Path, row_factory: RowFactory
) -> None:
    """Not an OSError nor an unreadable reply: parsing this reply raises RecursionError (a
    RuntimeError). The exchange is abandoned, the row written directly, and the next append
    gets a fresh connection."""
    server = serve(deeply_nested_reply)
    row = row_factory()
    with Client(socket_path=server.path, data_dir=data_dir) as client:
        if call == "sync":
            result = client.append(row)
        else:
            result = asyncio.run(client.append_async(row))
        assert result.outcome is Outcome.WRITTEN_DIRECTLY, result
        assert result.detail.startswith(f"daemon at {server.path} failed unexpectedly: ")
        assert "RecursionError" in result.detail
        assert run_ids_on_disk(data_dir) == [row["run_id"]]
        server.respond = answer({"ok": True})
        assert client.append(row_factory()).outcome is Outcome.DELIVERED
    assert server.connections == 2


def test_daemon_invalid_reply_is_rejected_and_logged_with_its_reason(
    serve: Callable[..., ProtocolServer],
    data_dir: Path,
    row_factory: RowFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The daemon's clock may disagree with ours (`finished_at` in the future): its verdict wins."""
    reason = "finished_at: 2026-12-01T00:00:00Z is more than a day in the future"
    server = serve(answer({"ok": False, "kind": "invalid", "error": reason}))
    row = row_factory()
    with caplog.at_level(logging.WARNING, logger="mantis_client"):
        result = append(row, socket_path=server.path, data_dir=data_dir)
    assert result == AppendResult(Outcome.REJECTED, reason, row["run_id"])
    assert [r.getMessage() for r in caplog.records] == [
        f"rejected run {row['run_id']} by the daemon: {reason}"
    ]
    assert lines_on_disk(data_dir) == []


# --- invalid rows, unwritable disks, the caller's exceptions --------------------------------


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"status": "paused"}, "status"),
        ({"finished_at": "2026-05-13T18:09:34"}, "finished_at"),  # no zone
        ({"total_time_s": float("nan")}, "total_time_s"),
        ({"run_id": ""}, "run_id"),
        ({"wall_time_breakdown": {"think": -1.0}}, "wall_time_breakdown.think"),
    ],
)
def test_invalid_row_is_rejected_never_sent_nor_written(
    row: dict[str, Any],
    field: str,
    serve: Callable[..., ProtocolServer],
    data_dir: Path,
    row_factory: RowFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve(answer({"ok": True}))
    bad = row_factory(**row)
    with caplog.at_level(logging.WARNING, logger="mantis_client"):
        result = append(bad, socket_path=server.path, data_dir=data_dir)
    assert result.outcome is Outcome.REJECTED
    assert result.detail.startswith(field), result.detail
    assert f"rejected run {bad['run_id']}: {field}" in caplog.text
    assert server.received == []
    assert not (data_dir / "runs_log").exists()


@pytest.mark.parametrize("junk", [None, 42, "{not json", ["a", "list"], {1: "non-str key"}])
def test_junk_instead_of_a_row_is_rejected_without_raising(
    junk: object, short_tmp: Path, data_dir: Path
) -> None:
    result = append(junk, socket_path=short_tmp / "none", data_dir=data_dir)  # type: ignore[arg-type]
    assert result.outcome is Outcome.REJECTED
    assert result.run_id is None
    assert not (data_dir / "runs_log").exists()


class UnreadableMapping(Mapping[str, Any]):
    """A mapping every access to which raises, like a lazy proxy over a store that went away."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("the backing store is gone")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("the backing store is gone")

    def __len__(self) -> int:
        raise RuntimeError("the backing store is gone")


class BrokenGetRow(dict[str, Any]):
    """A dict whose `get` raises: validation reads the dict itself, the rejection path `get`s."""

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("get is broken")


@pytest.mark.parametrize("call", ["Client.append", "append", "Client.append_async", "append_async"])
@pytest.mark.parametrize("kind", ["unreadable mapping", "invalid row whose get raises"])
def test_a_mapping_whose_access_raises_is_rejected_without_raising(
    kind: str,
    call: str,
    serve: Callable[..., ProtocolServer],
    data_dir: Path,
    row_factory: RowFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve(answer({"ok": True}))
    if kind == "unreadable mapping":
        row: Mapping[str, Any] = UnreadableMapping()
        error = "RuntimeError: the backing store is gone"
    else:
        row = BrokenGetRow(row_factory(status="paused"))
        error = "RuntimeError: get is broken"
    paths = {"socket_path": server.path, "data_dir": data_dir}
    with Client(**paths) as client, caplog.at_level(logging.WARNING, logger="mantis_client"):
        if call == "Client.append":
            result = client.append(row)
        elif call == "append":
            result = append(row, **paths)
        elif call == "Client.append_async":
            result = asyncio.run(client.append_async(row))
        else:
            result = asyncio.run(append_async(row, **paths))
    assert result == AppendResult(Outcome.REJECTED, f"row: cannot be validated ({error})", None)
    assert [r.getMessage() for r in caplog.records] == [f"rejected run None: {result.detail}"]
    assert server.received == []
    assert not (data_dir / "runs_log").exists()


def test_row_struct_is_accepted(short_tmp: Path, data_dir: Path, row_factory: RowFactory) -> None:
    row = msgspec.convert(row_factory(), Row)
    result = append(row, socket_path=short_tmp / "none", data_dir=data_dir)
    assert result.outcome is Outcome.WRITTEN_DIRECTLY
    assert run_ids_on_disk(data_dir) == [row.run_id]


def test_a_shard_lock_held_forever_does_not_hang_the_direct_write(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """A frozen writer (e.g. a stopped daemon mid-append) holds the shard's flock: the client
    gives up after its timeout, DROPPED, instead of waiting for it."""
    row = row_factory()
    shard = shard_path(data_dir, row["finished_at"][:7])
    shard.parent.mkdir(parents=True)
    with open(shard, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with Client(socket_path=short_tmp / "none", data_dir=data_dir, timeout=0.3) as client:
            started = time.monotonic()
            result = client.append(row)
            elapsed = time.monotonic() - started
    assert result.outcome is Outcome.DROPPED and "lock" in result.detail
    assert 0.3 <= elapsed < 0.3 + 2.0
    assert shard.read_bytes() == b""
    with Client(socket_path=short_tmp / "none", data_dir=data_dir, timeout=0.3) as client:
        assert client.append(row).outcome is Outcome.WRITTEN_DIRECTLY  # lock released


@pytest.mark.parametrize("unwritable", ["data dir is a file", "shard on a full disk"])
def test_every_path_failing_drops_the_row_logs_once_and_never_raises(
    unwritable: str,
    short_tmp: Path,
    data_dir: Path,
    row_factory: RowFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    row = row_factory()
    with contextlib.ExitStack() as stack:
        if unwritable == "data dir is a file":
            data_dir = data_dir / "a-file"  # the operator's path: even root cannot mkdir in it
            data_dir.write_text("")
        else:
            stack.enter_context(shard_on_a_full_disk(shard_path(data_dir, row["finished_at"][:7])))
        with caplog.at_level(logging.DEBUG, logger="mantis_client"):
            result = append(row, socket_path=short_tmp / "none", data_dir=data_dir)
    assert result.outcome is Outcome.DROPPED
    assert not result.durable
    assert [(r.levelname, row["run_id"] in r.getMessage()) for r in caplog.records] == [
        ("WARNING", True)
    ]


def test_keyboard_interrupt_during_append_propagates(
    serve: Callable[..., ProtocolServer], data_dir: Path, row_factory: RowFactory
) -> None:
    """A signal handler's exception is the caller's: the client must not turn it into DROPPED."""
    server = serve(never_answer)
    client = Client(socket_path=server.path, data_dir=data_dir)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGUSR1, not SIGALRM: pytest-timeout owns SIGALRM.
    previous = signal.signal(signal.SIGUSR1, interrupt)
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGUSR1))
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            client.append(row_factory(), timeout=30)
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)
    # The interrupted exchange is abandoned, and the client still works afterwards.
    server.respond = answer({"ok": True})
    assert client.append(row_factory()).outcome is Outcome.DELIVERED
    client.close()


def test_keyboard_interrupt_during_the_direct_write_propagates(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """Interrupted while waiting for a shard lock another writer holds: the interrupt is the
    caller's, never a DROPPED row."""
    row = row_factory()
    shard = shard_path(data_dir, row["finished_at"][:7])
    shard.parent.mkdir(parents=True)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, interrupt)
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGUSR1))
    try:
        with (
            open(shard, "a") as held,
            Client(socket_path=short_tmp / "none", data_dir=data_dir, timeout=30) as client,
        ):
            fcntl.flock(held, fcntl.LOCK_EX)
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                client.append(row)  # the lock wait is bounded by the same 30 s
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)
    assert shard.read_bytes() == b""


def test_callers_own_exception_is_untouched(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """Appending inside the caller's `except` block (the daemon absent, so the client handles
    errors of its own) leaves the caller's exception and its bare `raise` alone."""
    original = RuntimeError("the run failed")
    with pytest.raises(RuntimeError) as raised:
        try:
            raise original
        except RuntimeError:
            result = append(row_factory(), socket_path=short_tmp / "none", data_dir=data_dir)
            raise
    assert raised.value is original
    assert raised.value.__context__ is None
    assert result.outcome is Outcome.WRITTEN_DIRECTLY
    with pytest.raises(ValueError, match="after append"):
        append(row_factory(), socket_path=short_tmp / "none", data_dir=data_dir)
        raise ValueError("after append")


# --- connections: reuse, fork, async ------------------------------------------------------


def test_one_connection_serves_many_appends(
    serve: Callable[..., ProtocolServer], data_dir: Path, row_factory: RowFactory
) -> None:
    server = serve(answer({"ok": True}))
    with Client(socket_path=server.path, data_dir=data_dir) as client:
        results = [client.append(row_factory()) for _ in range(20)]
    assert {r.outcome for r in results} == {Outcome.DELIVERED}
    assert len(server.received) == 20
    assert server.connections == 1
    assert lines_on_disk(data_dir) == []  # delivered rows are the daemon's to write


def test_forked_child_never_shares_the_parents_connection(
    serve: Callable[..., ProtocolServer], data_dir: Path, row_factory: RowFactory
) -> None:
    server = serve(answer({"ok": True}))
    client = Client(socket_path=server.path, data_dir=data_dir)
    assert client.append(row_factory()).outcome is Outcome.DELIVERED  # connection now open
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = client.append(row_factory()).outcome is Outcome.DELIVERED
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.append(row_factory()).outcome is Outcome.DELIVERED
    assert len(server.received) == 3
    client.close()


async def test_append_async_does_not_block_the_event_loop(
    serve: Callable[..., ProtocolServer], data_dir: Path, row_factory: RowFactory
) -> None:
    server = serve(never_answer)
    row = row_factory()
    task = asyncio.create_task(
        append_async(row, timeout=1.0, socket_path=server.path, data_dir=data_dir)
    )
    await asyncio.sleep(0.05)  # returns only if the loop is free while the client waits
    assert not task.done()
    result = await task
    assert result.outcome is Outcome.WRITTEN_DIRECTLY
    assert run_ids_on_disk(data_dir) == [row["run_id"]]


async def test_append_async_rejects_invalid_rows_inline(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    result = await append_async(
        row_factory(status="paused"), socket_path=short_tmp / "none", data_dir=data_dir
    )
    assert result.outcome is Outcome.REJECTED


async def test_cancelling_append_async_propagates_and_still_writes_the_row(
    serve: Callable[..., ProtocolServer], data_dir: Path, row_factory: RowFactory
) -> None:
    server = serve(never_answer)
    row = row_factory()
    client = Client(socket_path=server.path, data_dir=data_dir, timeout=0.3)
    task = asyncio.create_task(client.append_async(row))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):  # the worker thread finishes the append on its own
        if run_ids_on_disk(data_dir):
            break
        await asyncio.sleep(0.05)
    client.close()
    assert run_ids_on_disk(data_dir) == [row["run_id"]]


def test_append_async_without_an_event_loop_runs_inline(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """Driven by hand, as an event loop other than asyncio (and not trio) would drive it."""
    row = row_factory()
    coroutine = append_async(row, socket_path=short_tmp / "none", data_dir=data_dir)
    with pytest.raises(StopIteration) as stop:
        coroutine.send(None)
    assert stop.value.value.outcome is Outcome.WRITTEN_DIRECTLY
    assert run_ids_on_disk(data_dir) == [row["run_id"]]


def test_default_client_is_shared_per_paths(short_tmp: Path, data_dir: Path) -> None:
    one = mantis_client.default_client(short_tmp / "a.sock", data_dir)
    assert mantis_client.default_client(short_tmp / "a.sock", data_dir) is one
    assert mantis_client.default_client(short_tmp / "b.sock", data_dir) is not one


def test_paths_resolve_from_the_environment(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MANTIS_SOCKET", str(short_tmp / "env.sock"))
    monkeypatch.setenv("MANTIS_DATA_DIR", str(data_dir))
    row = row_factory()
    result = append(row)
    assert result.outcome is Outcome.WRITTEN_DIRECTLY
    assert str(short_tmp / "env.sock") in result.detail
    assert run_ids_on_disk(data_dir) == [row["run_id"]]


def test_a_refusal_sent_before_the_row_is_read_even_when_the_send_fails(short_tmp: Path) -> None:
    """A daemon at its connection limit answers and closes at once: the client's send then
    fails (EPIPE), but the refusal's reason already arrived and is what the caller hears."""
    from mantis_client.connection import DaemonConnection

    path = short_tmp / "refuse.sock"
    refusal = b'{"ok":false,"kind":"unavailable","error":"at the connection limit"}\n'
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen()
        connection = DaemonConnection.open(path, time.monotonic() + 5)
        peer, _ = listener.accept()
        peer.sendall(refusal)
        peer.close()
        try:
            reply = connection.exchange(b'{"run_id":"x"}\n' * 20_000, time.monotonic() + 5)
        finally:
            connection.close()
    assert (reply.ok, reply.kind, reply.error) == (False, "unavailable", "at the connection limit")


@pytest.mark.parametrize("timeout", [math.inf, 1e12, math.nan, -1.0, "soon", None, True])
def test_an_odd_timeout_never_raises_drops_or_hangs(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory, timeout: Any
) -> None:
    """`append(timeout=inf)` used to overflow the lock's deadline and drop the row; a
    non-number raised into the caller. Odd values fall back to the default, huge ones to the
    cap, and the row is written as usual."""
    row = row_factory()
    result = append(row, socket_path=short_tmp / "absent.sock", data_dir=data_dir, timeout=timeout)
    assert result.outcome is Outcome.WRITTEN_DIRECTLY, result
    assert run_ids_on_disk(data_dir) == [row["run_id"]]


@pytest.mark.parametrize(
    ("timeout", "used"),
    [
        (math.inf, MAX_TIMEOUT),
        (1e12, MAX_TIMEOUT),
        (math.nan, DEFAULT_TIMEOUT),
        (-3, DEFAULT_TIMEOUT),
        (0.25, 0.25),
    ],
)
def test_a_clients_own_timeout_is_bounded(short_tmp: Path, timeout: float, used: float) -> None:
    with Client(socket_path=short_tmp / "absent.sock", timeout=timeout) as client:
        assert client.timeout == used
