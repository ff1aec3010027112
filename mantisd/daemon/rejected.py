"""Rejected rows, kept with their reason under `runs_log/rejected/`, never in a month shard.

Bounded: when the file passes half the budget it is rotated to `.1` (the old `.1` is dropped).
Not fsync'ed: this is a diagnostic trail, and it must never slow the good rows down. So the
connections only queue entries in memory (bounded too: past `MAX_PENDING_BYTES` they are
counted and dropped), and a task writes them out in a worker thread, never on the event loop.

Like a shard, the log is opened through `mantisd.safe_fs` (design.md, "Trust"): `runs_log/`,
`rejected/` and the file itself are never followed if they are links; anything odd in their
place is moved aside and a fresh one made.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

import anyio
import msgspec

from mantisd import safe_fs
from mantisd.paths import REJECTED, RUNS_LOG, rejected_dir

logger = logging.getLogger(__name__)

#: The longest piece of a rejected line that is kept (a 64 KiB abusive line is not worth more).
MAX_KEPT_LINE = 4096
#: Entries waiting to be written, at most (a flood of bad lines must not grow memory).
MAX_PENDING_BYTES = 1 << 20
#: How often queued entries are written out.
FLUSH_PERIOD = 0.1


class RejectedLog:
    """Appends one JSON line per rejected request: receive time, kind, reason, the line."""

    def __init__(self, data_dir: Path, max_bytes: int) -> None:
        self.data_dir = data_dir
        self.path = rejected_dir(data_dir) / "rejected.jsonl"
        self._rotate_at = max(max_bytes // 2, 1)
        self._failing = False
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        #: entries dropped because too many were waiting to be written
        self.dropped = 0

    def record(self, kind: str, reason: str, line: bytes) -> None:
        """Queue one rejection for the next flush (never blocks)."""
        kept = line[:MAX_KEPT_LINE].decode("utf-8", errors="replace")
        entry = {
            "received_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
            "kind": kind,
            "reason": reason,
            "bytes": len(line),
            "line": kept,
        }
        data = msgspec.json.encode(entry) + b"\n"
        if self._pending_bytes + len(data) > MAX_PENDING_BYTES:
            self.dropped += 1
            return
        self._pending.append(data)
        self._pending_bytes += len(data)

    async def run(self) -> None:
        """Write queued entries out every `FLUSH_PERIOD` until cancelled."""
        while True:
            await anyio.sleep(FLUSH_PERIOD)
            await self.flush()

    async def flush(self) -> None:
        if self._pending:
            entries = self._pending
            self._pending = []
            self._pending_bytes = 0
            await anyio.to_thread.run_sync(self._write, entries)

    def _write(self, entries: list[bytes]) -> None:
        """Append entries; problems are logged once per episode and otherwise ignored."""
        try:
            self._append(entries)
        except OSError as exc:
            if not self._failing:
                logger.warning("cannot keep rejected rows in %s: %s", self.path, exc)
            self._failing = True
        else:
            self._failing = False

    def _append(self, entries: list[bytes]) -> None:
        with safe_fs.opened_dirs(self.data_dir, (RUNS_LOG, REJECTED), create=True) as dirs:
            dir_fd = dirs[-1]
            name, rotated = self.path.name, self.path.name + ".1"
            fd = self._open(dir_fd)
            try:
                size = os.fstat(fd).st_size
                chunk: list[bytes] = []
                for entry in entries:
                    if size and size + len(entry) > self._rotate_at:
                        _write_chunk(fd, chunk)
                        chunk = []
                        os.close(fd)
                        fd = -1
                        # A rename never follows a link: whatever `.1` was, it is replaced.
                        os.replace(name, rotated, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                        fd = self._open(dir_fd)
                        size = 0
                    chunk.append(entry)
                    size += len(entry)
                _write_chunk(fd, chunk)
            finally:
                if fd >= 0:
                    os.close(fd)

    def _open(self, dir_fd: int) -> int:
        flags = os.O_WRONLY | os.O_APPEND
        return safe_fs.open_file(dir_fd, self.path.parent, self.path.name, flags)


def _write_chunk(fd: int, chunk: list[bytes]) -> None:
    if chunk:
        os.write(fd, b"".join(chunk))
