"""The one writer task: group commit of queued batches, one `write()` + `fsync` per month shard.

Rows are acknowledged only after `mantisd.store.append` returned for their shard group; a
`StoreError` answers exactly that group's rows with a storage error, and the next commit tries
again (the store rolled the failed bytes back and never trusts a retried fsync).

A shard's `flock` held by another process (an operator's `flock SHARD mv ...`, a client
stopped in the middle of its direct write) is waited for in slices of `LOCK_SLICE` seconds,
so that the wait is seen: status `writer_blocked_s` and `lock_waits`, a WARNING once the first
slice is over, an INFO when the lock is got. The wait is bounded by `lock_timeout`: past it
that group's rows are answered with a storage error naming the lock (the clients write them
directly, which waits for the same lock), and the next commit tries again; nothing is ever
acknowledged that is not on disk. Meanwhile rows queue up to the queue's byte budget, then
the readers wait (backpressure), so memory stays bounded however long the lock is held.

The appends run on the writer's own thread (`disk_thread.DiskThread`), one commit at a time,
through the shards of the last commit, held open (`store.OpenShards`: each append still proves
under the lock that the held file is the log's). Held shards the next commit does not touch
are closed, and all of them once no rows came for `HOLD_IDLE` seconds, so that a month deleted
or archived behind the daemon's back does not stay allocated.

The watchdog (`server.py`) counts a commit running longer than its period, a lock wait
included, as stuck and withholds its pings. The default `lock_timeout` (30 s) is below the
unit's `WatchdogSec` (60 s): a held lock makes the daemon answer errors, never restart (a
restarted daemon could not take the lock either), while a write or fsync hung in the kernel
still gets it restarted.
"""

from __future__ import annotations

import errno
import logging
import math
import time
from pathlib import Path
from typing import NamedTuple

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from mantisd.daemon.budget import Budget
from mantisd.daemon.disk_thread import DiskThread
from mantisd.daemon.replies import OK, Ticket, failure
from mantisd.daemon.status import Counters
from mantisd.paths import shard_path
from mantisd.store import OpenShards, StoreError

logger = logging.getLogger(__name__)

#: Longest single wait for a shard's lock before the writer looks up (logs, counts) again.
LOCK_SLICE = 1.0
#: Seconds without rows after which the writer closes the shards it holds open.
HOLD_IDLE = 2.0


class Batch:
    """A queue item: one connection's accepted rows of one receive, and where replies go.

    `payloads` maps each shard month to its rows' stored lines (`\n`-terminated, in request
    order) and their count. Only bytes are held: the decoded rows were dropped after validation.
    """

    __slots__ = ("payloads", "rows", "nbytes", "ticket")

    def __init__(self, payloads: dict[str, tuple[bytes, int]], ticket: Ticket) -> None:
        self.payloads = payloads
        self.ticket = ticket
        self.rows = sum(count for _, count in payloads.values())
        self.nbytes = sum(len(payload) for payload, _ in payloads.values())


class Commit(NamedTuple):
    """How one shard group's append went: its duration, the error if it failed, and whether
    it failed only because another process held the shard's lock."""

    seconds: float
    error: str | None
    locked: bool = False


def write_groups(
    shards: OpenShards, groups: list[tuple[Path, list[bytes]]], lock_timeout: float
) -> list[Commit]:
    """Append each shard's payload (on the writer's `DiskThread`); one failure does not stop
    the rest. Only these groups' shards stay open afterwards."""
    outcomes = []
    for path, parts in groups:
        started = time.perf_counter()
        try:
            payload = parts[0] if len(parts) == 1 else b"".join(parts)
            shards.append(path, payload, lock_timeout=lock_timeout)
        except StoreError as exc:
            locked = exc.errno == errno.ETIMEDOUT
            outcomes.append(Commit(time.perf_counter() - started, str(exc), locked))
        except Exception as exc:  # a bug or an odd OS error must not kill the writer
            logger.exception("unexpected error appending to %s", path)
            outcomes.append(Commit(time.perf_counter() - started, f"{path}: {exc}"))
        else:
            outcomes.append(Commit(time.perf_counter() - started, None))
    shards.close(keep=[path for path, _ in groups])
    return outcomes


class Writer:
    """Drains the queue commit by commit until every producer has closed its side."""

    def __init__(
        self,
        data_dir: Path,
        counters: Counters,
        budget: Budget,
        *,
        batch_max_rows: int,
        batch_max_bytes: int,
        lock_timeout: float,
    ) -> None:
        self.data_dir = data_dir
        self.counters = counters
        self.budget = budget
        self.batch_max_rows = batch_max_rows
        self.batch_max_bytes = batch_max_bytes
        self.lock_timeout = lock_timeout
        #: monotonic time the current commit went to disk, None while waiting for rows
        self.busy_since: float | None = None
        #: monotonic time the current commit began to wait for another process's lock
        self.blocked_since: float | None = None
        self.done = anyio.Event()
        self._failing: set[Path] = set()
        self._shards: dict[str, Path] = {}  # month -> path, built once a month, not per commit
        self._stop_waiting = False
        self._open = OpenShards()  # used on the disk thread only
        self._disk = DiskThread("mantisd-writer", idle=(HOLD_IDLE, self._open.close))

    def stop_waiting(self) -> None:
        """Stop waiting for shards locked by other processes (the daemon stops): their rows
        are answered with a storage error within `LOCK_SLICE` seconds, from now on at once."""
        self._stop_waiting = True

    def _shard(self, month: str) -> Path:
        path = self._shards.get(month)
        if path is None:
            if len(self._shards) > 64:  # rows of many months: rare, and bounded
                self._shards.clear()
            path = self._shards[month] = shard_path(self.data_dir, month)
        return path

    async def run(self, queue: MemoryObjectReceiveStream[Batch]) -> None:
        carried: Batch | None = None  # taken, but past the last commit's bounds
        try:
            async with queue:
                while True:
                    if carried is None:
                        try:
                            carried = self._taken(await queue.receive())
                        except anyio.EndOfStream:
                            break
                    commit, carried = self._gather(carried, queue)
                    await self.commit(commit)
        finally:
            self._disk.close()  # closes the shards held open, after the calls queued
            self.done.set()

    def _gather(
        self, first: Batch, queue: MemoryObjectReceiveStream[Batch]
    ) -> tuple[list[Batch], Batch | None]:
        """`first` and what is queued behind it, within the commit's bounds; and the batch
        taken that did not fit (it opens the next commit)."""
        commit, rows, nbytes = [first], first.rows, first.nbytes
        while rows < self.batch_max_rows and nbytes < self.batch_max_bytes:
            try:
                batch = self._taken(queue.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            rows, nbytes = rows + batch.rows, nbytes + batch.nbytes
            if rows > self.batch_max_rows or nbytes > self.batch_max_bytes:
                return commit, batch
            commit.append(batch)
        return commit, None

    def _taken(self, batch: Batch) -> Batch:
        self.budget.release(batch.nbytes, batch.rows)  # out of the queue: room for readers
        return batch

    async def commit(self, batches: list[Batch]) -> None:
        """Write the batches' rows, one append per month shard, and answer each batch."""
        groups: dict[str, list[bytes]] = {}
        counts: dict[str, int] = {}
        for batch in batches:
            for month, (payload, rows) in batch.payloads.items():
                groups.setdefault(month, []).append(payload)
                counts[month] = counts.get(month, 0) + rows
        paths = [(self._shard(month), parts) for month, parts in groups.items()]
        self.busy_since = time.monotonic()
        try:
            outcomes = await self._write(paths, counts)
        finally:
            self.busy_since = self.blocked_since = None
        self.counters.batches += 1
        self.counters.batched_rows += sum(counts.values())
        replies: dict[str, bytes] = {}
        for (month, rows), (path, _), outcome in zip(counts.items(), paths, outcomes, strict=True):
            self.counters.commit_seconds.append(outcome.seconds)
            if outcome.error is None:
                self._recovered(path)
                self.counters.rows_written += rows
                replies[month] = OK
            else:
                self._failed(path, outcome.error, rows)
                replies[month] = failure("storage", outcome.error)
        for batch in batches:
            batch.ticket.resolve(replies)

    async def _write(
        self, groups: list[tuple[Path, list[bytes]]], counts: dict[str, int]
    ) -> list[Commit]:
        """Append the groups, waiting for a lock held elsewhere at most `lock_timeout`."""
        started = time.monotonic()
        outcomes: list[Commit | None] = [None] * len(groups)
        rows = list(counts.values())
        todo = list(range(len(groups)))
        blocked: set[int] = set()
        while todo:
            left = self.lock_timeout - (time.monotonic() - started)
            results = await self._disk.run(
                write_groups,
                self._open,
                [groups[i] for i in todo],
                max(0.0, min(LOCK_SLICE, left)),
            )
            waiting = []
            # Stopping (the drain timed out) or cancelled (a second signal: the shielded calls
            # above never see it): the wait for a lock ends here, its rows answered.
            stopping = self._stop_waiting or anyio.current_effective_deadline() == -math.inf
            for i, result in zip(todo, results, strict=True):
                path = groups[i][0]
                waited = time.monotonic() - started
                if result.locked and waited < self.lock_timeout and not stopping:
                    waiting.append(i)
                    if i not in blocked:
                        blocked.add(i)
                        self.blocked_since = self.blocked_since or started
                        self.counters.lock_waits += 1
                        logger.warning(
                            "%s is locked by another process: %d rows wait for it (up to %gs, "
                            "then they are answered with a storage error)",
                            path,
                            rows[i],
                            self.lock_timeout,
                        )
                    continue
                if result.locked:
                    reason = (
                        f"{path}: another process held the shard's lock for "
                        f"{waited if stopping else self.lock_timeout:.0f}s; not written"
                        + ("; mantisd is stopping" if stopping else "")
                    )
                    result = result._replace(error=reason)
                elif i in blocked:
                    logger.info("got the lock of %s after %.1fs", path, waited)
                outcomes[i] = result
            todo = waiting
        return [outcome for outcome in outcomes if outcome is not None]

    def _failed(self, path: Path, error: str, rows: int) -> None:
        self.counters.storage_errors += 1
        self.counters.rows_failed += rows
        if path not in self._failing:  # once per episode, not once per batch
            self._failing.add(path)
            logger.error("storage error, rows answered with an error: %s", error)

    def _recovered(self, path: Path) -> None:
        if path in self._failing:
            self._failing.discard(path)
            logger.warning("storage recovered: %s is writable again", path)
