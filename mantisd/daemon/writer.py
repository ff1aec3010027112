"""The one writer task: group commit of queued rows, one `write()` + `fsync` per month shard.

Rows are acknowledged only after `mantisd.store.append` returned for their shard group; a
`StoreError` answers exactly that group's rows with a storage error, and the next batch tries
again (the store rolled the failed bytes back and never trusts a retried fsync).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import NamedTuple

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from mantisd.daemon.replies import OK, Ticket, failure
from mantisd.daemon.status import Counters
from mantisd.paths import shard_path
from mantisd.schema import ValidRow
from mantisd.store import StoreError, append

logger = logging.getLogger(__name__)


class Job(NamedTuple):
    """A validated row waiting in the queue, and where its reply goes."""

    row: ValidRow
    ticket: Ticket


class Commit(NamedTuple):
    """How one shard group's append went: its duration, and the error if it failed."""

    seconds: float
    error: str | None


def write_groups(groups: list[tuple[Path, bytes]]) -> list[Commit]:
    """Append each shard's payload (in a worker thread); one failure does not stop the rest."""
    outcomes = []
    for path, payload in groups:
        started = time.perf_counter()
        try:
            append(path, payload)
        except StoreError as exc:
            outcomes.append(Commit(time.perf_counter() - started, str(exc)))
        except Exception as exc:  # a bug or an odd OS error must not kill the writer
            logger.exception("unexpected error appending to %s", path)
            outcomes.append(Commit(time.perf_counter() - started, f"{path}: {exc}"))
        else:
            outcomes.append(Commit(time.perf_counter() - started, None))
    return outcomes


class Writer:
    """Drains the queue batch by batch until every producer has closed its side."""

    def __init__(self, data_dir: Path, counters: Counters, *, batch_max_rows: int) -> None:
        self.data_dir = data_dir
        self.counters = counters
        self.batch_max_rows = batch_max_rows
        #: monotonic time the current batch went to disk, None while waiting for rows
        self.busy_since: float | None = None
        self.done = anyio.Event()
        self._failing: set[Path] = set()

    async def run(self, queue: MemoryObjectReceiveStream[Job]) -> None:
        try:
            async with queue:
                while True:
                    try:
                        batch = [await queue.receive()]
                    except anyio.EndOfStream:
                        break
                    while len(batch) < self.batch_max_rows:
                        try:
                            batch.append(queue.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    await self.commit(batch)
        finally:
            self.done.set()

    async def commit(self, batch: list[Job]) -> None:
        """Write one batch and answer each of its rows."""
        by_month: dict[str, list[Job]] = {}
        for job in batch:
            by_month.setdefault(job.row.month, []).append(job)
        groups = {shard_path(self.data_dir, month): jobs for month, jobs in by_month.items()}
        payloads = [(path, b"".join(job.row.line for job in jobs)) for path, jobs in groups.items()]
        self.busy_since = time.monotonic()
        try:
            outcomes = await anyio.to_thread.run_sync(write_groups, payloads)
        finally:
            self.busy_since = None
        self.counters.batches += 1
        self.counters.batched_rows += len(batch)
        for (path, jobs), outcome in zip(groups.items(), outcomes, strict=True):
            self.counters.commit_seconds.append(outcome.seconds)
            if outcome.error is None:
                self._recovered(path)
                self.counters.rows_written += len(jobs)
                for job in jobs:
                    job.ticket.resolve(OK)
            else:
                self._failed(path, outcome.error, len(jobs))
                reply = failure("storage", outcome.error)
                for job in jobs:
                    job.ticket.resolve(reply)

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
