"""`mantis runs ship --dry-run`: how far behind each shard is, moving nothing.

The committed cursors are read from the database (never written; a database without the
mantis schema yet has none), and each shard is measured the way the shipper would resume it.
"""

from __future__ import annotations

import functools
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psycopg

from mantisd.fleet.cursor import Cursor, resume_offset
from mantisd.fleet.loader import CURSORS, cursor_of
from mantisd.fleet.migrations import current_version
from mantisd.fleet.shard_file import (
    fingerprint,
    open_log_dir,
    open_shard,
    shard_names,
    tail_mark,
)
from mantisd.paths import runs_log_dir

_COUNT_BLOCK: Final = 1 << 20


@dataclass(frozen=True)
class ShardPlan:
    """One shard: its size, where shipping would start (and why from 0), what is behind."""

    shard: str
    size: int
    start: int
    behind_bytes: int
    lines: int
    restart_reason: str | None


def committed_cursors(
    conn: psycopg.Connection[Any], source_id: uuid.UUID | None
) -> dict[str, Cursor]:
    """The source's cursors, read only; none for a new source or a database without schema."""
    if source_id is None or current_version(conn) == 0:
        return {}
    rows = conn.execute(CURSORS, (source_id,)).fetchall()
    return {row[0]: cursor_of(row) for row in rows}


def plan(data_dir: Path, cursors: dict[str, Cursor]) -> list[ShardPlan]:
    """Every shard, oldest first, measured against `cursors`."""
    log_fd = open_log_dir(data_dir)
    if log_fd is None:
        return []
    plans = []
    try:
        for name in shard_names(log_fd):
            try:
                shard = open_shard(log_fd, runs_log_dir(data_dir), name)
            except FileNotFoundError:
                continue
            try:
                start, why = resume_offset(
                    cursors.get(name),
                    shard,
                    fingerprint(shard.fd, shard.size),
                    functools.partial(tail_mark, shard.fd),
                )
                lines, complete = _complete_lines(shard.fd, start, shard.size)
                plans.append(ShardPlan(name, shard.size, start, complete - start, lines, why))
            finally:
                os.close(shard.fd)
    finally:
        os.close(log_fd)
    return plans


def _complete_lines(fd: int, start: int, stop: int) -> tuple[int, int]:
    """(complete lines in `[start, stop)`, offset just past the last one)."""
    lines, end, pos = 0, start, start
    while pos < stop:
        block = os.pread(fd, min(_COUNT_BLOCK, stop - pos), pos)
        if not block:
            break
        count = block.count(b"\n")
        if count:
            lines += count
            end = pos + block.rfind(b"\n") + 1
        pos += len(block)
    return lines, end
