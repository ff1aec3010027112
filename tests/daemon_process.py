"""Run a real `mantisd` subprocess for a test: start it, wait until it is ready, stop it.

    with running_daemon(short_tmp / "s.sock", data_dir) as daemon:
        assert daemon.send_rows([make_row()]) == [{"ok": True}]

On exit the daemon gets SIGTERM and must exit with `expect_exit` (0 unless told otherwise).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

READY_RE = re.compile(r"mantisd: ready on .* pid (\d+)\)")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def encode_rows(rows: Iterable[Mapping[str, Any] | bytes]) -> bytes:
    """Request lines: dicts are JSON-encoded; bytes are sent as given (plus `\\n` if missing)."""
    out = []
    for row in rows:
        line = row if isinstance(row, bytes) else msgspec.json.encode(row)
        out.append(line if line.endswith(b"\n") else line + b"\n")
    return b"".join(out)


def send_rows(
    socket_path: Path, rows: Iterable[Mapping[str, Any] | bytes], *, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Pipeline `rows` on one connection and return one parsed reply per row.

    Returns fewer replies if the daemon closes the connection early (e.g. a `limit` reply).
    """
    payload = encode_rows(rows)
    expected = payload.count(b"\n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sender = threading.Thread(target=_send_all, args=(sock, payload), daemon=True)
        sender.start()
        data = bytearray()
        while data.count(b"\n") < expected:
            try:
                chunk = sock.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data.extend(chunk)
        sender.join(timeout)
    return [msgspec.json.decode(line) for line in bytes(data).splitlines()]


def _send_all(sock: socket.socket, payload: bytes) -> None:
    try:
        sock.sendall(payload)
    except OSError:
        pass  # the daemon closed the connection; the reader sees how far it got


class DaemonProcess:
    """A started daemon: `.proc`, `.pid` (mantisd's own pid, even under a wrapper),
    `.socket`, `.data_dir`, `.stderr` (everything it logged so far)."""

    def __init__(self, proc: subprocess.Popen[bytes], socket_path: Path, data_dir: Path) -> None:
        self.proc = proc
        self.socket = socket_path
        self.data_dir = data_dir
        self.pid: int = proc.pid
        self._lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    @property
    def stderr(self) -> str:
        return "".join(self._lines)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace")
            self._lines.append(line)
            match = READY_RE.search(line)
            if match and not self._ready.is_set():
                self.pid = int(match[1])
                self._ready.set()
        self._ready.set()  # EOF: whoever waits learns the process is gone

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        if not self._ready.wait(timeout):
            raise TimeoutError(f"mantisd not ready after {timeout}s:\n{self.stderr}")
        if not READY_RE.search(self.stderr):
            self.proc.wait(5)
            raise RuntimeError(
                f"mantisd exited with {self.proc.returncode} before ready:\n{self.stderr}"
            )

    def send_rows(
        self, rows: Iterable[Mapping[str, Any] | bytes], *, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Pipeline rows (dicts or raw lines) on one fresh connection; one reply per row."""
        return send_rows(self.socket, rows, timeout=timeout)

    def status(self) -> dict[str, Any]:
        (reply,) = send_rows(self.socket, [b'{"op":"status"}'])
        counters: dict[str, Any] = reply["status"]
        return counters

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal mantisd (not its wrapper) and wait; returns the exit status."""
        if self.proc.poll() is None:
            try:
                self.send_signal(signum)
            except ProcessLookupError:
                pass
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code


def daemon_command(socket_path: Path, data_dir: Path, *extra_args: str) -> list[str]:
    """The argv that runs mantisd from this interpreter's environment."""
    return [
        sys.executable,
        "-m",
        "mantisd.daemon",
        "--socket",
        str(socket_path),
        "--data-dir",
        str(data_dir),
        *extra_args,
    ]


@contextmanager
def running_daemon(
    socket_path: Path,
    data_dir: Path,
    *extra_args: str,
    env: Mapping[str, str] | None = None,
    preexec_fn: Callable[[], Any] | None = None,
    wrapper: Sequence[str] | None = None,
    pass_fds: Sequence[int] = (),
    command: Sequence[str] | None = None,
    expect_exit: int | None = 0,
    ready_timeout: float = READY_TIMEOUT,
) -> Iterator[DaemonProcess]:
    """Start mantisd, wait for its ready line, yield it; SIGTERM it on exit.

    `env` is added to (not replacing) this process's environment; `wrapper` is put in front
    of the command (e.g. `["strace", "-f", ...]`); `command` replaces the whole argv (a
    wrapper script, socket activation); `expect_exit=None` skips the exit-status check
    (e.g. after the test killed the daemon itself).
    """
    argv = list(command) if command else daemon_command(socket_path, data_dir, *extra_args)
    if wrapper:
        argv = [*wrapper, *argv]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=full_env,
        preexec_fn=preexec_fn,
        pass_fds=tuple(pass_fds),
    )
    daemon = DaemonProcess(proc, socket_path, data_dir)
    try:
        daemon.wait_ready(ready_timeout)
        yield daemon
    finally:
        code = daemon.stop()
    if expect_exit is not None:
        assert code == expect_exit, f"mantisd exited with {code}:\n{daemon.stderr}"


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll `predicate` until true (bounded); for states a test cannot await directly."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


def shard_lines(data_dir: Path, month: str) -> list[bytes]:
    """The raw lines of one month shard (each with its `\\n`), [] if it does not exist."""
    path = data_dir / "runs_log" / f"{month}.jsonl"
    try:
        return path.read_bytes().splitlines(keepends=True)
    except FileNotFoundError:
        return []


def all_run_ids(data_dir: Path) -> list[str]:
    """run_id of every parseable line in every month shard (torn lines skipped)."""
    ids = []
    for shard in sorted((data_dir / "runs_log").glob("*.jsonl")):
        if not shard.is_file():  # e.g. a test's symlink to /dev/full: never read that
            continue
        for line in shard.read_bytes().splitlines():
            try:
                ids.append(msgspec.json.decode(line)["run_id"])
            except (msgspec.DecodeError, KeyError, TypeError):
                continue
    return ids
