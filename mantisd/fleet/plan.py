"""`mantis runs ship --dry-run`: how far behind each shard and archive is, moving nothing.

The committed cursors are read from the database (never written; a database without the
mantis schema yet has none), and each file is measured the way the shipper would resume it
(`log_files.start_of`): an archive in bytes and lines of its decompressed content, read a
frame at a time.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psycopg

from mantisd import compressed
from mantisd.fleet.cursor import Cursor
from mantisd.fleet.loader import CURSORS, cursor_of
from mantisd.fleet.log_files import log_files, open_log_file, start_of
from mantisd.fleet.migrations import current_version
from mantisd.fleet.shard_file import Content, open_log_dir, pread
from mantisd.paths import runs_log_dir

_COUNT_BLOCK: Final = 1 << 20


@dataclass(frozen=True)
class ShardPlan:
    """One shard or archive: its size (decompressed), where shipping would start (and why
    from 0, or what is wrong with it), what is behind."""

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
    """Every shard and archive, in shipping order, measured against `cursors`."""
    log_fd = open_log_dir(data_dir)
    if log_fd is None:
        return []
    plans = []
    try:
        for file in log_files(log_fd, runs_log_dir(data_dir)):
            name = file.path.name
            try:
                opened = open_log_file(log_fd, runs_log_dir(data_dir), file)
            except FileNotFoundError:
                continue
            except compressed.DamagedArchive as exc:
                plans.append(ShardPlan(name, 0, 0, 0, 0, f"damaged: {exc}; none of it readable"))
                continue
            try:
                start, _, why = start_of(opened, file, cursors)
                lines, complete = _complete_lines(opened.content, start, opened.size)
                if opened.damage is not None:
                    why = f"damaged: {opened.damage}; readable up to byte {complete}"
                plans.append(ShardPlan(name, opened.size, start, complete - start, lines, why))
            finally:
                opened.close()
    finally:
        os.close(log_fd)
    return plans


def _complete_lines(content: Content, start: int, stop: int) -> tuple[int, int]:
    """(complete lines in `[start, stop)`, offset just past the last one)."""
    lines, end, pos = 0, start, start
    while pos < stop:
        block = pread(content, min(_COUNT_BLOCK, stop - pos), pos)
        if not block:
            break
        count = block.count(b"\n")
        if count:
            lines += count
            end = pos + block.rfind(b"\n") + 1
        pos += len(block)
    return lines, end
