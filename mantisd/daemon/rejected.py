"""Rejected rows, kept with their reason under `runs_log/rejected/`, never in a month shard.

Bounded: when the file passes half the budget it is rotated to `.1` (the old `.1` is dropped).
Not fsync'ed: this is a diagnostic trail, and it must never slow the good rows down.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

import msgspec

from mantisd.paths import rejected_dir

logger = logging.getLogger(__name__)

#: The longest piece of a rejected line that is kept (a 64 KiB abusive line is not worth more).
MAX_KEPT_LINE = 4096


class RejectedLog:
    """Appends one JSON line per rejected request: receive time, kind, reason, the line."""

    def __init__(self, data_dir: Path, max_bytes: int) -> None:
        self.path = rejected_dir(data_dir) / "rejected.jsonl"
        self._rotate_at = max(max_bytes // 2, 1)
        self._failing = False

    def record(self, kind: str, reason: str, line: bytes) -> None:
        """Keep one rejection; problems are logged once and otherwise ignored."""
        kept = line[:MAX_KEPT_LINE].decode("utf-8", errors="replace")
        entry = {
            "received_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
            "kind": kind,
            "reason": reason,
            "bytes": len(line),
            "line": kept,
        }
        data = msgspec.json.encode(entry) + b"\n"
        try:
            self._append(data)
        except OSError as exc:
            if not self._failing:
                logger.warning("cannot keep rejected rows in %s: %s", self.path, exc)
            self._failing = True
        else:
            self._failing = False

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(mode=0o770, parents=True, exist_ok=True)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size + len(data) > self._rotate_at and size:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o660)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
