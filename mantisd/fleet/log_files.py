"""What a shipping pass reads: a data dir's shards and archives, in order, opened alike.

Each file of the log is shipped on its own, by its name: a month's plain shard
(`shard_file`) and each of its archives (`archive_file`), with a cursor each (`cursor`).
Oldest month first, and within a month its archives before its plain shard: they hold the
month's older rows, and an archive made from the shard goes on from the shard's cursor
(`cursor.archive_start`) while that cursor is still the shard's it was made from, not yet
replaced by the cursor of a late shard (rows logged after the month was archived).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path

from mantisd import compressed
from mantisd.fleet.archive_file import OpenArchive, open_archive
from mantisd.fleet.cursor import Cursor, archive_start, resume_offset
from mantisd.fleet.records import DeadLetter
from mantisd.fleet.shard_file import OpenShard, fingerprint, open_shard, pread, tail_mark
from mantisd.paths import ARCHIVE_RE, SHARD_RE, LogFile

Opened = OpenShard | OpenArchive


def log_files(log_fd: int, log_path: Path) -> list[LogFile]:
    """The shards and archives in `runs_log/` (open as `log_fd`), in shipping order.

    By name alone: a link or a FIFO under a log file's name is listed, so that opening it
    refuses it and the run says so (`safe_fs`), rather than passing over it in silence.
    """
    found = []
    for name in os.listdir(log_fd):
        match = SHARD_RE.match(name) or ARCHIVE_RE.match(name)
        if match:
            month = f"{match[1]}-{match[2]}"
            found.append(LogFile(month, log_path / name, match.re is ARCHIVE_RE))
    return sorted(found, key=lambda f: (f.month, not f.compressed, f.path.name))


def open_log_file(log_fd: int, log_path: Path, file: LogFile) -> Opened:
    """Open a shard or an archive for reading (`open_shard`, `open_archive`: their errors)."""
    if file.compressed:
        return open_archive(log_fd, log_path, file.path.name)
    return open_shard(log_fd, log_path, file.path.name)


def month_names(month: str) -> tuple[str, ...]:
    """Every name a file of `month` may have in the log: its shard and its archives."""
    return tuple(f"{month}.jsonl{suffix}" for suffix in ("", ".gz", f".{compressed.ZSTD}"))


def start_of(
    opened: Opened, file: LogFile, cursors: Mapping[str, Cursor]
) -> tuple[int, bytes | None, str | None]:
    """Where shipping `opened` starts, the fingerprint of its first line, and why it is read
    again from the start (None: it is not, or it was never shipped)."""
    mark = fingerprint(opened.content, opened.size)
    tail_at = functools.partial(tail_mark, opened.content)
    name = opened.name
    if isinstance(opened, OpenShard):
        position, why = resume_offset(cursors.get(name), opened, mark, tail_at)
        return position, mark, why
    others = [cursors[n] for n in month_names(file.month) if n != name and n in cursors]
    position, why = archive_start(cursors.get(name), others, opened.size, mark, tail_at)
    return position, mark, why


def other_month_files(file: LogFile) -> tuple[str, ...]:
    """The other names of `file`'s month (its shard, its archives): their dead letters may be
    of `file`'s lines (`mantisd.fleet.loader`)."""
    return tuple(name for name in month_names(file.month) if name != file.path.name)


class LineCheck:
    """Whether `opened` holds a dead letter's line at an offset (`loader.Holds`): a whole line
    there, of the same length, beginning with the same bytes (all of them, up to
    `KEEP_BYTES`). Answers are kept: the same dead letters are asked about batch after batch.
    """

    def __init__(self, opened: Opened) -> None:
        self.content = opened.content
        self.size = opened.size
        self._known: dict[tuple[int, bytes, int], bool] = {}

    def __call__(self, offset: int, letter: DeadLetter) -> bool:
        key = (offset, letter.digest, letter.length)
        found = self._known.get(key)
        if found is None:
            found = self._known[key] = self._holds(offset, letter)
        return found

    def _holds(self, offset: int, letter: DeadLetter) -> bool:
        end = offset + letter.length  # where its newline is
        if offset < 0 or end >= self.size:
            return False
        before = 1 if offset else 0
        head = pread(self.content, before + len(letter.raw), offset - before)
        if (before and head[0] != ord("\n")) or head[before:] != letter.raw:
            return False
        return pread(self.content, 1, end) == b"\n"
