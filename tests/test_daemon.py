"""mantisd end to end: a real daemon process on a temp socket and data dir."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mantisd.schema import validate
from tests.daemon_process import (
    DaemonProcess,
    all_run_ids,
    daemon_command,
    running_daemon,
    send_rows,
    shard_lines,
    wait_for,
)
from tests.rows import RowFactory, utc

OK = {"ok": True}


def this_month() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m")


def last_month_row(row_factory: RowFactory) -> dict[str, Any]:
    first = dt.datetime.now(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    finished = first - dt.timedelta(hours=3)
    return row_factory(
        finished_at=utc(finished), created_at=utc(finished - dt.timedelta(seconds=60))
    )


@pytest.fixture
def daemon(short_tmp: Path, data_dir: Path) -> Any:
    with running_daemon(short_tmp / "m.sock", data_dir) as d:
        yield d


def good_row_succeeds(d: DaemonProcess, row_factory: RowFactory) -> None:
    """The daemon is alive and well: a good row on a fresh connection is acknowledged."""
    row = row_factory()
    assert d.send_rows([row]) == [OK]
    assert row["run_id"] in all_run_ids(d.data_dir)


def test_round_trip_canonical_lines_in_month_shards(
    daemon: DaemonProcess, row_factory: RowFactory
) -> None:
    now_rows = [row_factory(), row_factory(extra_key={"kept": [1, 2]}, total_time_s=247)]
    old = last_month_row(row_factory)
    assert daemon.send_rows([*now_rows, old]) == [OK, OK, OK]
    assert shard_lines(daemon.data_dir, this_month()) == [validate(r).line for r in now_rows]
    old_month = old["finished_at"][:7]
    assert old_month != this_month()
    assert shard_lines(daemon.data_dir, old_month) == [validate(old).line]
    stored = json.loads(shard_lines(daemon.data_dir, this_month())[1])
    assert stored["extra_key"] == {"kept": [1, 2]}
    assert stored["total_time_s"] == 247.0


def test_future_finished_at_is_rejected(daemon: DaemonProcess, row_factory: RowFactory) -> None:
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=40)
    (reply,) = daemon.send_rows([row_factory(finished_at=utc(future))])
    assert reply["ok"] is False and reply["kind"] == "invalid"
    assert "finished_at" in reply["error"]
    assert not list((daemon.data_dir / "runs_log").glob("*.jsonl"))


def test_pipelining_10000_rows_on_one_connection(
    daemon: DaemonProcess, row_factory: RowFactory
) -> None:
    rows = [row_factory() for _ in range(10_000)]
    replies = daemon.send_rows(rows)
    assert replies == [OK] * len(rows)
    assert all_run_ids(daemon.data_dir) == [r["run_id"] for r in rows]
    status = daemon.status()
    assert status["rows_written"] == 10_000
    assert status["batches"] < 10_000  # group commit: several rows per fsync


def test_50_concurrent_connections(daemon: DaemonProcess, row_factory: RowFactory) -> None:
    batches = [[row_factory() for _ in range(40)] for _ in range(50)]
    results: list[list[dict[str, Any]]] = [[] for _ in batches]
    barrier = threading.Barrier(len(batches))

    def client(i: int) -> None:
        barrier.wait()
        results[i] = daemon.send_rows(batches[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r == [OK] * 40 for r in results)
    assert sorted(all_run_ids(daemon.data_dir)) == sorted(r["run_id"] for b in batches for r in b)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        (b"[1, 2]", "expected a JSON object"),
        (b'"a string"', "expected a JSON object"),
        (b"42", "expected a JSON object"),
        (b"not json at all", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"run_id": "\xff\xfe"}', "UTF-8"),
        (b"\xc3\x28\xa0\xa1", "not valid"),
    ],
)
def test_bad_lines_get_invalid_and_connection_continues(
    daemon: DaemonProcess, row_factory: RowFactory, line: bytes, needle: str
) -> None:
    good = row_factory()
    bad_reply, good_reply = daemon.send_rows([line, good])
    assert bad_reply["ok"] is False and bad_reply["kind"] == "invalid"
    assert needle in bad_reply["error"]
    assert good_reply == OK
    assert all_run_ids(daemon.data_dir) == [good["run_id"]]
    good_row_succeeds(daemon, row_factory)


def test_invalid_row_names_the_field_and_is_kept_as_rejected(
    daemon: DaemonProcess, row_factory: RowFactory
) -> None:
    row = row_factory(status="paused")
    (reply,) = daemon.send_rows([row])
    assert reply["kind"] == "invalid" and "status" in reply["error"]
    missing = row_factory()
    del missing["workflow_id"]
    (reply,) = daemon.send_rows([missing])
    assert "workflow_id" in reply["error"]
    assert not list((daemon.data_dir / "runs_log").glob("*.jsonl"))
    kept_path = daemon.data_dir / "runs_log" / "rejected" / "rejected.jsonl"
    wait_for(lambda: kept_path.exists() and kept_path.read_bytes().count(b"\n") == 2)
    kept = kept_path.read_bytes()
    entries = [json.loads(line) for line in kept.splitlines()]
    assert [e["kind"] for e in entries] == ["invalid", "invalid"]
    assert row["run_id"] in entries[0]["line"] and "status" in entries[0]["reason"]
    assert all(e["received_at"].endswith("Z") for e in entries)
    assert daemon.status()["rows_rejected"] == 2
    good_row_succeeds(daemon, row_factory)


def test_too_long_line_gets_limit_and_close(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    with running_daemon(short_tmp / "m.sock", data_dir, "--max-line-bytes", "4096") as d:
        long_line = msgspec.json.encode(row_factory(padding="x" * 5000))
        replies = d.send_rows([row_factory(), long_line, row_factory()])
        assert replies[0] == OK
        assert replies[1]["kind"] == "limit" and "4096" in replies[1]["error"]
        assert len(replies) == 2  # closed after the limit reply
        assert len(all_run_ids(data_dir)) == 1
        good_row_succeeds(d, row_factory)


def row_line_of(size: int, row_factory: RowFactory) -> bytes:
    """A valid row's JSON line of exactly `size` bytes (without its newline)."""
    bare = msgspec.json.encode(row_factory(padding=""))
    line = msgspec.json.encode(row_factory(padding="x" * (size - len(bare))))
    assert len(line) == size
    return line


def test_line_limit_at_the_default_64_kib(daemon: DaemonProcess, row_factory: RowFactory) -> None:
    """Exactly the limit is a row; beyond it (several socket reads long) is `limit` and close,
    answered once: the daemon neither takes a truncated line for a row nor spins on it."""
    limit = 64 * 1024
    assert daemon.send_rows([row_line_of(limit, row_factory)]) == [OK]
    replies = daemon.send_rows([row_line_of(3 * limit, row_factory), row_factory()])
    assert [r.get("kind") for r in replies] == ["limit"]
    assert f"{limit} bytes" in replies[0]["error"]
    status = daemon.status()
    assert status["rows_written"] == 1 and status["rows_rejected"] == 1
    good_row_succeeds(daemon, row_factory)


def test_disconnect_mid_line_writes_nothing(daemon: DaemonProcess, row_factory: RowFactory) -> None:
    line = msgspec.json.encode(row_factory())
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(daemon.socket))
        sock.sendall(line[: len(line) // 2])
    time.sleep(0.2)
    assert all_run_ids(daemon.data_dir) == []
    good_row_succeeds(daemon, row_factory)


def test_client_that_never_reads_does_not_stall_others(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    with running_daemon(short_tmp / "m.sock", data_dir, "--max-inflight", "64") as d:
        payload = b"".join(msgspec.json.encode(row_factory()) + b"\n" for _ in range(20_000))
        hog = socket.socket(socket.AF_UNIX)
        hog.connect(str(d.socket))
        hog.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # push until the daemon stops reading from us
            try:
                sent += hog.send(payload[sent : sent + 65536])
            except BlockingIOError:
                time.sleep(0.2)
                try:
                    sent += hog.send(payload[sent : sent + 65536])
                except BlockingIOError:
                    break
        assert sent < len(payload)  # the hog is blocked: its replies are not read
        for _ in range(3):
            good_row_succeeds(d, row_factory)
        hog.close()
        good_row_succeeds(d, row_factory)


def test_idle_connection_is_closed(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    with running_daemon(short_tmp / "m.sock", data_dir, "--idle-timeout", "0.5") as d:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(d.socket))
            started = time.monotonic()
            assert sock.recv(100) == b""  # closed by the daemon
            assert time.monotonic() - started < 9
        good_row_succeeds(d, row_factory)


def test_a_connection_sending_within_a_short_idle_timeout_stays_open(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """With `--idle-timeout 0.8`, a row every 0.2 s keeps the connection: the deadline was
    moved at most once a second, so such a connection was closed at 0.8 s."""
    with running_daemon(short_tmp / "m.sock", data_dir, "--idle-timeout", "0.8") as d:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(d.socket))
            reader = sock.makefile("rb")
            rows = [row_factory() for _ in range(10)]
            for row in rows:
                sock.sendall(msgspec.json.encode(row) + b"\n")
                assert msgspec.json.decode(reader.readline()) == OK
                time.sleep(0.2)
        assert all_run_ids(data_dir) == [r["run_id"] for r in rows]


def test_max_connections_exceeded_gets_unavailable(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    with running_daemon(short_tmp / "m.sock", data_dir, "--max-connections", "2") as d:
        held = [socket.socket(socket.AF_UNIX) for _ in range(2)]
        for sock in held:
            sock.connect(str(d.socket))
        held[0].sendall(b'{"op":"status"}\n')  # both are being served
        held[0].recv(4096)
        held[1].sendall(b'{"op":"status"}\n')
        held[1].recv(4096)
        replies = send_rows(d.socket, [row_factory()])
        assert replies[0]["kind"] == "unavailable"
        assert "too many connections" in replies[0]["error"]
        assert all_run_ids(data_dir) == []
        for sock in held:
            sock.close()
        time.sleep(0.2)
        good_row_succeeds(d, row_factory)


def test_unknown_op_is_invalid(daemon: DaemonProcess) -> None:
    (reply,) = daemon.send_rows([b'{"op":"reboot"}'])
    assert reply["kind"] == "invalid" and "unknown op" in reply["error"]


def test_peer_not_allowed_is_refused(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    other = os.getuid() + 4242
    with running_daemon(short_tmp / "m.sock", data_dir, "--allow-uid", str(other)) as d:
        replies = d.send_rows([row_factory(), row_factory()])
        assert len(replies) == 1 and replies[0]["kind"] == "unavailable"
        assert f"uid {os.getuid()}" in replies[0]["error"]
        assert all_run_ids(data_dir) == []
    with running_daemon(short_tmp / "m.sock", data_dir, "--allow-uid", str(os.getuid())) as d:
        good_row_succeeds(d, row_factory)
    allow_gid = ("--allow-uid", str(other), "--allow-gid", str(os.getgid()))
    with running_daemon(short_tmp / "m.sock", data_dir, *allow_gid) as d:
        good_row_succeeds(d, row_factory)


def test_status_command(daemon: DaemonProcess, row_factory: RowFactory) -> None:
    daemon.send_rows([row_factory(), row_factory(), b"[]"])
    base = [sys.executable, "-m", "mantisd.daemon", "status", "--socket", str(daemon.socket)]
    as_json = subprocess.run([*base, "--json"], capture_output=True, check=True, timeout=30)
    counters = json.loads(as_json.stdout)
    assert counters["rows_written"] == 2 and counters["rows_rejected"] == 1
    assert counters["batches"] >= 1 and counters["fsync_p50_ms"] > 0
    assert {"queue_depth", "connections", "fsync_p99_ms", "uptime_s", "storage_errors"} <= set(
        counters
    )
    table = subprocess.run(base, capture_output=True, check=True, timeout=30, text=True)
    assert "rows_written" in table.stdout and "mean_rows_per_batch" in table.stdout


def test_status_without_daemon_fails_cleanly(short_tmp: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mantisd.daemon", "status", "--socket", str(short_tmp / "no")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and "cannot reach mantisd" in result.stderr


def test_socket_mode(short_tmp: Path, data_dir: Path) -> None:
    with running_daemon(short_tmp / "m.sock", data_dir) as d:
        assert d.socket.stat().st_mode & 0o777 == 0o660
    assert not (short_tmp / "m.sock").exists()  # removed on exit
    with running_daemon(short_tmp / "m.sock", data_dir, "--socket-mode", "600") as d:
        assert d.socket.stat().st_mode & 0o777 == 0o600


def test_stale_socket_replaced_and_live_daemon_refused(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    path = short_tmp / "m.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a crashed daemon's leftover
    with running_daemon(path, data_dir) as d:
        good_row_succeeds(d, row_factory)
        second = subprocess.run(
            daemon_command(path, data_dir), capture_output=True, text=True, timeout=30
        )
        assert second.returncode != 0
        assert "already listening on" in second.stderr
        good_row_succeeds(d, row_factory)  # the second one did not take the socket away


def test_a_daemon_still_starting_on_the_path_is_not_taken_for_stale(
    short_tmp: Path, data_dir: Path
) -> None:
    """Another daemon holds `<socket>.lock` (it may not be listening yet): refused, and the
    socket path is left alone."""
    path = short_tmp / "m.sock"
    with open(path.with_name("m.sock.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        second = subprocess.run(
            daemon_command(path, data_dir), capture_output=True, text=True, timeout=30
        )
    assert second.returncode != 0
    assert f"another mantisd is already listening on {path}" in second.stderr
    assert not path.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_a_socket_directory_of_another_user_is_refused(short_tmp: Path, data_dir: Path) -> None:
    """A pre-created `/tmp/mantisd-<uid>` of someone else could hold a fake socket: refuse."""
    foreign = short_tmp / "foreign"
    foreign.mkdir()
    os.chown(foreign, 65534, 65534)
    result = subprocess.run(
        daemon_command(foreign / "m.sock", data_dir), capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "belongs to uid 65534" in result.stderr


def test_rejected_rows_are_bounded(short_tmp: Path, data_dir: Path) -> None:
    budget = 8192
    with running_daemon(short_tmp / "m.sock", data_dir, "--rejected-max-bytes", str(budget)) as d:
        replies = d.send_rows([b'{"bad": "%d"}' % i for i in range(500)])
        assert all(r["kind"] == "invalid" for r in replies)
    rejected = data_dir / "runs_log" / "rejected"
    files = sorted(p.name for p in rejected.iterdir())
    assert files == ["rejected.jsonl", "rejected.jsonl.1"]
    assert sum(p.stat().st_size for p in rejected.iterdir()) <= budget
    assert not list((data_dir / "runs_log").glob("*.jsonl"))


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_signals_stop_cleanly(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory, signum: str
) -> None:
    import signal

    with running_daemon(short_tmp / "m.sock", data_dir) as d:
        good_row_succeeds(d, row_factory)
        assert d.stop(getattr(signal, signum)) == 0
    assert "stopped: 1 rows written" in d.stderr


def test_state_directory_is_the_default_data_dir(
    short_tmp: Path, tmp_path: Path, row_factory: RowFactory
) -> None:
    state = tmp_path / "state"
    command = [sys.executable, "-m", "mantisd.daemon", "--socket", str(short_tmp / "m.sock")]
    env = {"STATE_DIRECTORY": str(state), "MANTIS_DATA_DIR": ""}
    with running_daemon(short_tmp / "m.sock", state, command=command, env=env) as d:
        assert f"data dir {state}" in d.stderr
        good_row_succeeds(d, row_factory)


def test_settings_from_environment(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    env = {"MANTISD_MAX_LINE_BYTES": "1024", "MANTISD_ALLOW_UID": f"{os.getuid()} 4242"}
    with running_daemon(short_tmp / "m.sock", data_dir, env=env) as d:
        (reply,) = d.send_rows([row_factory(padding="x" * 2000)])
        assert reply["kind"] == "limit" and "1024" in reply["error"]
        good_row_succeeds(d, row_factory)


def test_pipelined_replies_are_each_in_their_request_place(
    daemon: DaemonProcess, row_factory: RowFactory
) -> None:
    """Valid rows, rows refused for different reasons, control requests and rows stored in
    another month or rewritten, pipelined on one connection and batched together: each reply
    answers its own request (out of order, a run of identical `{"ok":true}` would not tell)."""
    requests: list[dict[str, Any] | bytes] = []
    checks: list[Any] = []
    written: list[str] = []
    for i in range(3000):
        kind = i % 9
        if kind in (0, 1, 2):
            row = row_factory()
            requests.append(row)
            written.append(row["run_id"])
            checks.append(OK)
        elif kind == 3:
            requests.append(row_factory(status=f"paused-{i}"))  # the reply names its value
            checks.append(("invalid", f"Invalid enum value 'paused-{i}'"))
        elif kind == 4:
            missing = row_factory()
            field = ["workflow_id", "viable", "tenant_id"][i % 3]
            del missing[field]
            requests.append(missing)
            checks.append(("invalid", f"{field}: missing required field"))
        elif kind == 5:
            requests.append(b'{"op":"status"}')
            checks.append("status")
        elif kind == 6:
            requests.append(b'{"op":"reboot-%d"}' % i)
            checks.append(("invalid", f"unknown op 'reboot-{i}'"))
        elif kind == 7:
            row = last_month_row(row_factory) if i % 2 else row_factory(total_time_s=i)
            requests.append(row)
            written.append(row["run_id"])
            checks.append(OK)
        else:
            requests.append(b"[%d]" % i)
            checks.append(("invalid", "expected a JSON object"))
    replies = daemon.send_rows(requests)
    assert len(replies) == len(requests)
    for position, (reply, check) in enumerate(zip(replies, checks, strict=True)):
        if check == "status":
            assert reply["ok"] is True and "rows_written" in reply["status"], position
        elif check == OK:
            assert reply == OK, position
        else:
            kind, needle = check
            assert reply["ok"] is False and reply["kind"] == kind, (position, reply)
            assert needle in reply["error"], (position, reply)
    assert sorted(all_run_ids(daemon.data_dir)) == sorted(written)
    shard = [msgspec.json.decode(x)["run_id"] for x in shard_lines(daemon.data_dir, this_month())]
    assert shard == [run_id for run_id in written if run_id in set(shard)]  # in request order


def test_a_row_nested_too_deeply_is_invalid_and_the_connection_goes_on(
    daemon: DaemonProcess, row_factory: RowFactory
) -> None:
    """1,200 nested lists in an extra key once killed the connection without a reply (and the
    rows before it, written, were never acknowledged)."""
    before, after = [row_factory() for _ in range(3)], [row_factory() for _ in range(3)]
    deep = msgspec.json.encode(row_factory())[:-1] + b',"deep":' + b"[" * 1200 + b"]" * 1200 + b"}"
    replies = daemon.send_rows([*before, deep, *after])
    assert replies[:3] == [OK] * 3 and replies[4:] == [OK] * 3
    assert replies[3]["ok"] is False and replies[3]["kind"] == "invalid"
    assert all_run_ids(daemon.data_dir) == [r["run_id"] for r in [*before, *after]]
    assert daemon.status()["rows_rejected"] == 1
    good_row_succeeds(daemon, row_factory)


def test_an_integer_too_big_for_a_double_is_invalid_and_the_connection_goes_on(
    daemon: DaemonProcess, row_factory: RowFactory
) -> None:
    """400 nines as `total_time_s` once raised OverflowError while the refusal was worded:
    the connection closed without a reply, the good rows around it unanswered."""
    before, after = [row_factory() for _ in range(2)], [row_factory() for _ in range(2)]
    line = msgspec.json.encode(row_factory())
    huge = line.replace(b'"total_time_s":', b'"total_time_s":' + b"9" * 400 + b',"x":', 1)
    replies = daemon.send_rows([*before, huge, *after])
    assert replies[:2] == [OK] * 2 and replies[3:] == [OK] * 2
    assert replies[2]["kind"] == "invalid" and "beyond a double's range" in replies[2]["error"]
    assert all_run_ids(daemon.data_dir) == [r["run_id"] for r in [*before, *after]]


def test_the_line_limit_cannot_exceed_what_readers_read(short_tmp: Path) -> None:
    """A daemon that acknowledged a line longer than `MAX_LINE_BYTES` would store a row that
    every reader skips: the option refuses such a limit before the daemon starts."""
    from mantisd.schema import MAX_LINE_BYTES

    proc = subprocess.run(
        [sys.executable, "-m", "mantisd.daemon", "--socket", str(short_tmp / "m.sock")]
        + ["--max-line-bytes", str(MAX_LINE_BYTES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert f"{MAX_LINE_BYTES} is not in the range 256<=x<={MAX_LINE_BYTES - 1}" in proc.stderr


def test_receives_of_more_rows_than_a_batch_may_hold_are_cut_in_order(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """With room for 3 unanswered rows per connection, each receive of hundreds of rows,
    accepted as sent (or judged line by line around a bad one), is cut into batches of 3:
    every row answered in its place and stored in request order."""
    with running_daemon(short_tmp / "m.sock", data_dir, env={"MANTISD_MAX_INFLIGHT": "3"}) as d:
        good = [row_factory() for _ in range(600)]
        assert d.send_rows(good) == [OK] * 600
        mixed: list[dict[str, Any] | bytes] = [row_factory() for _ in range(300)]
        mixed[150:150] = [b"[1]", b'{"op":"status"}']
        replies = d.send_rows(mixed)
        assert replies[:150] == [OK] * 150 and replies[152:] == [OK] * 150
        assert replies[150]["kind"] == "invalid" and "rows_written" in replies[151]["status"]
        shard = [msgspec.json.decode(x)["run_id"] for x in shard_lines(d.data_dir, this_month())]
        expected = [r["run_id"] for r in [*good, *mixed] if isinstance(r, dict)]
        assert shard == expected
