"""The daemon's runtime: listener, connections, the writer, signals, readiness, watchdog.

Shutdown order (SIGTERM/SIGINT): stop accepting, stop reading requests, answer what was
received, let the writer drain the queue to disk (bounded by `drain_timeout`), exit.

Memory is bounded in bytes (design.md, "Trust"). Rows wait for the writer as their stored
lines only: the decoded objects (up to ~25x a line's size, for rows of empty objects) live
only while one batch is validated, and the event loop validates one batch at a time. The worst
case, with the defaults in brackets, every connection sending 64 KiB lines, never reading its
replies, and the writer stalled:

- the queue: `queue_max_bytes` of lines [64 MiB] (and at most `queue_size` rows);
- the writer: one commit taken out of the queue, at most `batch_max_bytes` [8 MiB] plus one
  batch, and its joined copy for the `write()`: ~17 MiB;
- each connection: the batch waiting for room in the queue (a receive, `RECEIVE_BYTES` =
  256 KiB, with a partial line before it, `max_line_bytes` [64 KiB]), the partial line after
  it, and replies its client has not read (`MAX_REPLY_BYTES` = 64 KiB, besides
  `max_inflight_per_connection` [1024] rows): ~0.45 MiB, times `max_connections` [256]:
  ~112 MiB;
- the one batch being validated: its lines three times over (received, split, encoded) and
  its decoded objects: ~9 MiB; the rejected log's pending entries: 1 MiB.

So ~205 MiB over the interpreter's own ~30 MB; a pod with a smaller budget lowers
`--queue-max-bytes` or `--max-connections`. The kernel's socket buffers are not counted.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from typing import Any

import anyio
from anyio.abc import SocketListener, SocketStream, TaskGroup, TaskStatus

from mantisd.daemon import fs, listen, peer
from mantisd.daemon.budget import Budget
from mantisd.daemon.config import Config
from mantisd.daemon.connection import UNAVAILABLE_STOPPING, Connection
from mantisd.daemon.logs import announce
from mantisd.daemon.notify import Notifier, watchdog_interval
from mantisd.daemon.rejected import RejectedLog
from mantisd.daemon.replies import failure
from mantisd.daemon.status import Counters
from mantisd.daemon.writer import LOCK_SLICE, Batch, Writer
from mantisd.paths import runs_log_dir
from mantisd.store import ensure_dir

logger = logging.getLogger(__name__)

#: How long a refused client gets to take its one-line answer.
_REFUSAL_TIMEOUT = 1.0
#: How often systemd's STATUS= line is refreshed.
_STATUS_PERIOD = 10.0


class Server:
    """`await Server(config).run()` serves until SIGTERM/SIGINT, then drains and returns."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.counters = Counters(latency_window=config.latency_window)
        #: what the writer's queue holds: its stream is unbounded in items, this bounds it
        self.queue_budget = Budget(max_bytes=config.queue_max_bytes, max_rows=config.queue_size)
        self.writer = Writer(
            config.data_dir,
            self.counters,
            self.queue_budget,
            batch_max_rows=config.batch_max_rows,
            batch_max_bytes=config.batch_max_bytes,
            lock_timeout=config.lock_timeout,
        )
        self.rejected = RejectedLog(config.data_dir, config.rejected_max_bytes)
        self.notifier = Notifier()
        self.stopping = False
        self._stop = anyio.Event()
        self._all_closed = anyio.Event()
        self._connections: set[Connection] = set()
        self._drain: anyio.CancelScope | None = None
        self._queue_send, self._queue_receive = anyio.create_memory_object_stream[Batch](math.inf)

    def request_stop(self) -> None:
        self._stop.set()

    def status(self) -> dict[str, Any]:
        blocked_since = self.writer.blocked_since
        return self.counters.snapshot(
            queue_depth=self.queue_budget.rows,
            writer_busy=self.writer.busy_since is not None,
        ) | {
            "queue_bytes": self.queue_budget.bytes,
            "writer_blocked_s": 0.0
            if blocked_since is None
            else round(time.monotonic() - blocked_since, 1),
            "rejected_dropped": self.rejected.dropped,
        }

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._check_data_dir()
        bound = await listen.bind(self.config.socket, mode=self.config.socket_mode)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self._handle_signals, tg)
                tg.start_soon(self.writer.run, self._queue_receive)
                tg.start_soon(self._watchdog)
                tg.start_soon(self._report_status)
                tg.start_soon(self.rejected.run)
                accepting = anyio.CancelScope()
                tg.start_soon(self._accept_loop, bound.listener, tg, accepting)
                where = bound.path or "the socket passed by systemd"
                announce(f"ready on {where} (data dir {self.config.data_dir}, pid {os.getpid()})")
                self.notifier.ready(f"serving on {where}")
                task_status.started()
                await self._stop.wait()
                await self._shutdown(bound.listener, accepting)
                tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await self.rejected.flush()  # the last rejections, written after the rows
        finally:
            listen.remove_socket_file(bound)
            self.notifier.close()
        logger.info("stopped: %(rows_written)d rows written", self.status())

    async def _shutdown(self, listener: SocketListener, accepting: anyio.CancelScope) -> None:
        self.stopping = True
        self.notifier.stopping("draining the queue")
        logger.info("stopping: draining %d queued rows", self.status()["queue_depth"])
        accepting.cancel()
        await listener.aclose()
        for connection in list(self._connections):
            connection.stop_reading()
        self._queue_send.close()  # the writer ends once every connection's clone is closed too
        if not self._connections:
            self._all_closed.set()
        with anyio.move_on_after(self.config.drain_timeout, shield=True) as drain:
            self._drain = drain  # a second signal cancels it (the shield keeps others out)
            await self._all_closed.wait()
            await self.writer.done.wait()
        if drain.cancelled_caught and not self.writer.done.is_set():
            # Rows may wait for a shard another process holds (up to --lock-timeout): they are
            # answered now, and their replies get the time to go out before the connections end.
            self.writer.stop_waiting()
            with anyio.move_on_after(LOCK_SLICE + 1.0, shield=True):
                await self._all_closed.wait()
                await self.writer.done.wait()
        if drain.cancelled_caught:
            logger.error(
                "drain timed out after %.0fs: %d rows still queued were not acknowledged",
                self.config.drain_timeout,
                self.status()["queue_depth"],
            )

    async def _handle_signals(
        self, tg: TaskGroup, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()  # installed before the ready line: no signal is missed
            async for signum in signals:
                if self._stop.is_set():
                    logger.warning("second %s: stopping without draining", signum.name)
                    if self._drain is not None:
                        self._drain.cancel()
                    tg.cancel_scope.cancel()
                    return
                logger.info("%s received", signum.name)
                self.request_stop()

    async def _accept_loop(
        self, listener: SocketListener, tg: TaskGroup, scope: anyio.CancelScope
    ) -> None:
        with scope:
            while True:
                try:
                    stream = await listener.accept()
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return
                except OSError as exc:  # e.g. EMFILE: keep serving the connections we have
                    logger.warning("accept failed: %s", exc)
                    await anyio.sleep(0.1)
                    continue
                tg.start_soon(self._serve_connection, stream)

    async def _serve_connection(self, stream: SocketStream) -> None:
        if self.stopping:
            return await self._refuse(stream, UNAVAILABLE_STOPPING)
        if len(self._connections) >= self.config.max_connections:
            self.counters.connections_refused += 1
            limit = self.config.max_connections
            reason = f"too many connections (max {limit}); write the row directly"
            return await self._refuse(stream, failure("unavailable", reason))
        who = peer.peer_of(stream)
        if not peer.allowed(who, self.config.allow_uids, self.config.allow_gids):
            self.counters.connections_refused += 1
            logger.info("refused peer %s", who)
            reason = (
                f"peer uid {who.uid if who else '?'} gid {who.gid if who else '?'} is not allowed"
            )
            return await self._refuse(stream, failure("unavailable", reason))
        connection = Connection(
            stream,
            self.config,
            self._queue_send.clone(),
            self.queue_budget,
            self.counters,
            self.rejected,
            self.status,
        )
        self._connections.add(connection)
        self.counters.connections = len(self._connections)
        self.counters.connections_total += 1
        try:
            await connection.serve()
        except Exception:  # one connection's bug must never stop the daemon
            logger.exception("connection failed")
        finally:
            self._connections.discard(connection)
            self.counters.connections = len(self._connections)
            if self.stopping and not self._connections:
                self._all_closed.set()

    @staticmethod
    async def _refuse(stream: SocketStream, reply: bytes) -> None:
        with anyio.move_on_after(_REFUSAL_TIMEOUT):
            try:
                await stream.send(reply)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass
        with anyio.CancelScope(shield=True):
            await stream.aclose()

    async def _watchdog(self) -> None:
        """Ping systemd only while the writer makes progress or waits with nothing to do.

        A commit running longer than the watchdog period withholds the pings, a wait for
        another process's shard lock included: that wait is bounded by `lock_timeout` (below
        the unit's `WatchdogSec`), after which the rows are answered and pings resume, so only
        a write or fsync hung in the kernel gets the daemon restarted (see `writer.py`)."""
        interval = watchdog_interval()
        if interval is None or not self.notifier.enabled:
            return
        stuck_logged = False
        while True:
            busy_since = self.writer.busy_since
            if busy_since is None or time.monotonic() - busy_since < interval:
                self.notifier.watchdog()
                stuck_logged = False
            elif not stuck_logged:
                logger.error(
                    "writer stuck for %.1fs: watchdog pings withheld", time.monotonic() - busy_since
                )
                stuck_logged = True
            await anyio.sleep(interval / 2)

    async def _report_status(self) -> None:
        if not self.notifier.enabled:
            return
        while True:
            await anyio.sleep(_STATUS_PERIOD)
            s = self.status()
            blocked = s["writer_blocked_s"]
            self.notifier.status(
                f"{s['rows_written']} rows written, {s['connections']} connections, "
                f"{s['storage_errors']} storage errors"
                + (f", writer waiting {blocked:.0f}s for a shard's lock" if blocked else "")
            )

    def _check_data_dir(self) -> None:
        """Warn (never fail) about a data dir that will not work well; the writer retries."""
        data_dir = self.config.data_dir
        network = fs.network_filesystem(data_dir)
        if network:
            logger.warning(
                "data dir %s is on %s: O_APPEND is not atomic across writers on network "
                "filesystems; concurrent direct writes from clients may interleave",
                data_dir,
                network,
            )
        try:
            ensure_dir(runs_log_dir(data_dir))  # with the fsyncs that make its name durable
        except OSError as exc:
            logger.warning(
                "cannot create %s (%s): rows will get storage errors until fixed",
                runs_log_dir(data_dir),
                exc.strerror or exc,
            )
