"""One connection to mantisd: a line out, its reply line back, every step bounded by a deadline.

The wire protocol (README, "Daemon wire protocol"): one JSON row per line, one JSON reply per
line, in order. A `Client` keeps at most one exchange in flight on a connection, so the next
line read is always the reply to the row just sent.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import msgspec

#: A reply longer than this is not a protocol reply: give up on the connection.
MAX_REPLY_BYTES = 64 * 1024


class ConnectionClosed(ConnectionError):
    """Raised when the daemon closed the connection before replying (restart, idle timeout)."""


class ReplyError(Exception):
    """Raised when the daemon's reply line is not a protocol reply."""


class Reply(msgspec.Struct):
    """`{"ok":true}` or `{"ok":false,"kind":...,"error":...}`; other keys are ignored."""

    ok: bool
    kind: str | None = None
    error: str | None = None


_reply_decoder = msgspec.json.Decoder(Reply)

#: `struct ucred` (pid, uid, gid), as `getsockopt(SO_PEERCRED)` returns it.
_UCRED = struct.Struct("iII")


def remaining(deadline: float) -> float:
    """Seconds left before `deadline` (a `time.monotonic()` value); `TimeoutError` if none."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("mantisd did not answer before the timeout")
    return left


class DaemonConnection:
    """A connected Unix stream socket to the daemon and the bytes read past the last reply."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    @classmethod
    def open(cls, path: Path, deadline: float) -> DaemonConnection:
        """Connect to the daemon's socket; `OSError` (missing, refused, EACCES, timeout)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(remaining(deadline))
            sock.connect(str(path))
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    def listener_uid(self) -> int:
        """The uid of whoever listens on the other end (`SO_PEERCRED`, as of its `listen()`)."""
        _, uid, _ = _UCRED.unpack(
            self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
        return int(uid)

    def exchange(self, line: bytes, deadline: float) -> Reply:
        """Send one `\\n`-terminated line and return the daemon's reply to it."""
        if self._buffer:  # a reply nobody asked for: the stream is out of step, start afresh
            raise ConnectionClosed(f"unexpected data from mantisd: {self._buffer[:200]!r}")
        self._sock.settimeout(remaining(deadline))
        # MSG_NOSIGNAL: a dead daemon is EPIPE, never SIGPIPE, even if the host process
        # restored SIGPIPE's default action.
        try:
            self._sock.sendall(line, socket.MSG_NOSIGNAL)
        except (BrokenPipeError, ConnectionResetError) as exc:
            # A daemon that refuses a connection (at its connection limit, shutting down)
            # answers first and closes: its reason may be waiting even though our send failed.
            try:
                return self._receive(deadline)
            except (OSError, ReplyError):
                raise exc from None
        return self._receive(deadline)

    def _receive(self, deadline: float) -> Reply:
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_REPLY_BYTES:
                raise ReplyError(f"reply longer than {MAX_REPLY_BYTES} bytes")
            self._sock.settimeout(remaining(deadline))
            chunk = self._sock.recv(MAX_REPLY_BYTES)
            if not chunk:
                raise ConnectionClosed("mantisd closed the connection")
            self._buffer += chunk
        reply, _, self._buffer = self._buffer.partition(b"\n")
        try:
            return _reply_decoder.decode(reply)
        except msgspec.DecodeError as exc:
            raise ReplyError(f"unreadable reply {reply[:200]!r}: {exc}") from None

    def close(self) -> None:
        self._sock.close()
