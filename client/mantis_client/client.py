"""`Client`: append rows through one daemon connection, or write them directly when it fails.

Paths, in order (design.md, "Client"): validate locally (an invalid row is rejected, never
written); send to the daemon, if its socket passes the trust checks (`trust.py`), and wait for
its durable ack until the deadline; on anything but an ack or an `invalid` reply (no daemon,
an untrusted socket, a refusal, a hang, a storage error, an unexpected error on the way), append
the row to its shard with the store's own code. The call never raises an `Exception` into the
caller and never blocks longer than its timeout plus one direct write. `BaseException`s that
are not `Exception`s (KeyboardInterrupt, SystemExit, cancellation) belong to the caller and
always propagate.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from mantis_client.aio import run_blocking
from mantis_client.connection import ConnectionClosed, DaemonConnection, Reply, ReplyError
from mantis_client.outcome import AppendResult, Outcome
from mantis_client.trust import TrustedUids, UntrustedSocket, check_listener, check_socket_path
from mantisd.paths import resolve_data_dir, resolve_socket_path
from mantisd.schema import Row, RowError, ValidRow, validate
from mantisd.store import append_rows

log = logging.getLogger("mantis_client")

#: Seconds an append waits for the daemon before writing the row itself.
DEFAULT_TIMEOUT = 1.0
#: The longest wait a caller may ask for: `append` is fire-and-forget, never a hang.
MAX_TIMEOUT = 60.0


def usable_timeout(timeout: object, fallback: float) -> float:
    """`timeout` when it is a number of seconds >= 0, at most `MAX_TIMEOUT`; anything else
    (NaN, negative, not a number) is logged and `fallback` used: a caller's odd value never
    makes `append` raise, overflow a deadline or wait for ever."""
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout >= 0:
        return min(float(timeout), MAX_TIMEOUT)  # NaN fails `>= 0`; inf becomes the cap
    log.warning("timeout %r is not a number of seconds >= 0; using %ss", timeout, fallback)
    return fallback


#: Every live client, so that a forked child never shares a parent's socket or held lock.
_clients: weakref.WeakSet[Client] = weakref.WeakSet()

RowLike = Mapping[str, Any] | Row


class Client:
    """Appends rows to the log through one reusable daemon connection (thread safe).

    One exchange is in flight at a time (a lock guards the connection); a thread that cannot
    get the connection before its deadline writes its row directly instead of waiting. The
    socket path, data dir and expected daemon uid (`expect_uid`, else `$MANTIS_DAEMON_UID`)
    are resolved once, here; the module-level `append` re-resolves them on every call.
    `ValueError` if `expect_uid` is not a uid.
    """

    def __init__(
        self,
        *,
        socket_path: str | os.PathLike[str] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        expect_uid: int | None = None,
    ) -> None:
        self.socket_path: Path = resolve_socket_path(socket_path)
        self.data_dir: Path = resolve_data_dir(data_dir)
        self.timeout = usable_timeout(timeout, DEFAULT_TIMEOUT)
        self.trusted = TrustedUids.resolve(expect_uid)
        if self.trusted.ignored:
            log.warning("%s", self.trusted.ignored)
        self._lock = threading.Lock()
        self._connection: DaemonConnection | None = None
        _clients.add(self)

    def append(self, row: RowLike, *, timeout: float | None = None) -> AppendResult:
        """Make `row` durable by the first path that works; never raises an `Exception`."""
        deadline = self._deadline(timeout)
        valid = self._validate(row)
        if isinstance(valid, AppendResult):
            return valid
        return self._deliver(valid, deadline)

    async def append_async(
        self,
        row: RowLike,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the daemon wait, as in `append`)
    ) -> AppendResult:
        """`append` for async callers: the socket and disk I/O run in a worker thread."""
        deadline = self._deadline(timeout)
        valid = self._validate(row)  # here, so a dict the caller mutates later is not re-read
        if isinstance(valid, AppendResult):
            return valid
        return await run_blocking(self._deliver, valid, deadline)

    def close(self) -> None:
        """Close the daemon connection (a later append opens a new one)."""
        with self._lock:
            self._disconnect()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(socket_path={str(self.socket_path)!r}, data_dir={str(self.data_dir)!r})"

    def _deadline(self, timeout: float | None) -> float:
        if timeout is not None:
            timeout = usable_timeout(timeout, self.timeout)
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _validate(self, row: RowLike) -> ValidRow | AppendResult:
        try:
            return validate(row)
        except RowError as exc:
            reason = str(exc)
        except Exception as exc:  # never raise into the caller, whatever `row` is
            reason = f"row: cannot be validated ({type(exc).__name__}: {exc})"
        run_id = _run_id_of(row)
        log.warning("rejected run %s: %s", run_id, reason)
        return AppendResult(Outcome.REJECTED, reason, run_id)

    def _deliver(self, valid: ValidRow, deadline: float) -> AppendResult:
        try:
            result = self._send_to_daemon(valid, deadline)
            if isinstance(result, AppendResult):
                return result
            return self._write_directly(valid, result)
        except Exception as exc:  # a bug of ours must not break the caller's finishing run
            log.warning("dropped run %s: unexpected error", valid.run_id, exc_info=True)
            return AppendResult(Outcome.DROPPED, f"unexpected error: {exc!r}", valid.run_id)

    def _send_to_daemon(self, valid: ValidRow, deadline: float) -> AppendResult | str:
        """The daemon's verdict, or why the row must be written directly."""
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return "the daemon connection stayed busy until the timeout"
        try:
            reply = self._exchange(valid.line, deadline)
            return self._judge(reply, valid)
        except (OSError, ReplyError) as exc:
            self._disconnect()  # after a timeout a late reply would answer the next row
            return f"daemon at {self.socket_path} unreachable: {exc}"
        except UntrustedSocket as exc:
            log.warning("not sending run %s: %s", valid.run_id, exc)
            return str(exc)
        except Exception as exc:  # e.g. a reply nested too deep for the parser: RecursionError
            self._disconnect()
            log.warning("daemon exchange for run %s failed", valid.run_id, exc_info=True)
            return f"daemon at {self.socket_path} failed unexpectedly: {exc!r}"
        except BaseException:
            self._disconnect()  # interrupted mid-exchange: the stream is out of step
            raise
        finally:
            self._lock.release()

    def _exchange(self, line: bytes, deadline: float) -> Reply:
        """One round trip; a reused connection the daemon dropped is retried once, fresh."""
        if self._connection is not None:
            try:
                return self._connection.exchange(line, deadline)
            except (BrokenPipeError, ConnectionResetError, ConnectionClosed):
                self._disconnect()  # daemon restarted or closed an idle connection
        self._connection = self._connect(deadline)
        return self._connection.exchange(line, deadline)

    def _connect(self, deadline: float) -> DaemonConnection:
        """A connection to a trusted daemon (`UntrustedSocket` before a byte is sent)."""
        check_socket_path(self.socket_path, self.trusted)
        connection = DaemonConnection.open(self.socket_path, deadline)
        try:
            check_listener(connection.listener_uid(), self.socket_path, self.trusted)
        except BaseException:
            connection.close()
            raise
        return connection

    def _judge(self, reply: Reply, valid: ValidRow) -> AppendResult | str:
        if reply.ok:
            return AppendResult(Outcome.DELIVERED, "", valid.run_id)
        if reply.kind == "invalid":
            log.warning("rejected run %s by the daemon: %s", valid.run_id, reply.error)
            return AppendResult(Outcome.REJECTED, reply.error or "invalid", valid.run_id)
        if reply.kind != "storage":
            self._disconnect()  # `limit`, `unavailable`: the daemon closes it; unknown: distrust
        return f"daemon replied {reply.kind}: {reply.error}"

    def _write_directly(self, valid: ValidRow, why: str) -> AppendResult:
        try:
            # A writer stuck holding the shard's lock (a frozen daemon) must not hang us.
            append_rows(self.data_dir, [valid], lock_timeout=self.timeout)
        except Exception as exc:
            log.warning("dropped run %s: %s; direct write failed: %s", valid.run_id, why, exc)
            return AppendResult(Outcome.DROPPED, f"{why}; direct write: {exc}", valid.run_id)
        log.info("wrote run %s directly (%s)", valid.run_id, why)
        return AppendResult(Outcome.WRITTEN_DIRECTLY, why, valid.run_id)

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _forget_after_fork(self) -> None:
        """In a forked child: a fresh lock, and never the parent's connection."""
        self._lock = threading.Lock()
        self._disconnect()  # closes the child's copy of the descriptor only


def _run_id_of(row: object) -> str | None:
    """The run_id of a rejected row, if it has a readable one (its access may raise too)."""
    try:
        run_id = row.get("run_id") if isinstance(row, Mapping) else getattr(row, "run_id", None)
    except Exception:
        return None
    return run_id if type(run_id) is str else None  # a str subclass could raise in its __str__


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
