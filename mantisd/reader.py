"""Reading the log newest first: bad lines skipped and counted, one row per `run_id`.

Layer 1 (stdlib + msgspec). Readers never fail on a bad line; they decode into whatever lean
msgspec Struct the caller needs (fields it does not name are never materialised), a block of
lines at a time, and fall back to one line at a time only in a block that holds a bad line.

Whatever is on disk, a reader holds a bounded amount (design.md, "Trust"): a line longer than
`MAX_LINE_BYTES` is streamed past and counted as bad; links and odd files are never read; a
file truncated while it is read (a writer's rollback) is read on from its new end.

Archived months (`<YYYY-MM>.jsonl.zst` or `.gz`, `mantisd.compressed`) are read as their
plain shards are, newest first; a month's plain shard (rows logged after it was archived) is
read before its archive. An archive that is truncated or corrupt is reported in
`ScanReport.damaged` and the rest of it skipped, never raised.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from mantisd import compressed, safe_fs
from mantisd.paths import RUNS_LOG, LogFile, log_files_in, runs_log_dir
from mantisd.schema import MAX_LINE_BYTES, Count, Name, Seconds, Timestamp

BLOCK_SIZE = 1 << 20
T = TypeVar("T", bound="KeyedRow")
Line = TypeVar("Line", bound=bytes | bytearray)


class KeyedRow(msgspec.Struct, gc=False):
    """Base of reader structs: every row the reader yields has a `run_id`."""

    run_id: Name


class CheckedRow(KeyedRow, gc=False):
    """Every key of `Row` but the breakdown, present and typed like `Row`'s, so that readers
    skip (and count) the lines `validate` would refuse whatever fields a query uses.

    Only `cost_breakdown` and `error` are checked for presence alone (as `Raw`: building
    their values for every row would cost more than the rest of the scan)."""

    schema_version: Annotated[int, msgspec.Meta(ge=1)]
    tenant_id: Name
    profile_id: Name
    workflow_id: Name
    plan_signature: str | None
    model: str | None
    status: Literal["succeeded", "failed"]
    created_at: Timestamp
    finished_at: Timestamp
    total_time_s: Seconds
    cost_breakdown: msgspec.Raw
    steps_executed: Count
    viable: Count
    error: msgspec.Raw


class StatRow(CheckedRow, gc=False):
    """A checked row with its buckets: what `mantis runs stats` / `compare` / `trend` read."""

    wall_time_breakdown: dict[str, Seconds]


@dataclass
class ScanReport:
    """What a scan skipped, for the one-line summary readers print on stderr."""

    bad_lines: int = 0
    duplicates: int = 0
    shards_read: int = 0
    #: Archives that could not be read to their end: `<file>: <what is wrong>` each.
    damaged: list[str] = field(default_factory=list)

    def add(self, other: ScanReport) -> None:
        """Count what another scan (another shard, a worker) skipped too."""
        self.bad_lines += other.bad_lines
        self.duplicates += other.duplicates
        self.shards_read += other.shards_read
        self.damaged.extend(other.damaged)

    def summary(self) -> str | None:
        parts = []
        if self.bad_lines:
            parts.append(f"skipped {self.bad_lines} unreadable line(s)")
        if self.duplicates:
            parts.append(f"dropped {self.duplicates} duplicate run_id(s)")
        damaged = list(dict.fromkeys(self.damaged))  # a file read by two queries: once
        if damaged:
            parts.append(
                f"skipped {len(damaged)} damaged archive(s), from the damage on "
                f"({'; '.join(damaged)})"
            )
        return "; ".join(parts) or None


Window = tuple[bytes | bytearray, int, int]


def iter_windows(
    path: Path,
    block_size: int = BLOCK_SIZE,
    report: ScanReport | None = None,
    *,
    max_line: int = MAX_LINE_BYTES,
) -> Iterator[Window]:
    """The file's whole lines, last ones first, as windows `(buffer, start, end)`.

    `buffer[start:end]` is lines joined by `\\n` (in file order, no final `\\n`). The buffer is
    reused: a window is valid until the next one is asked for (no allocation per block, no
    copy but the read itself). Reads only up to the size the file had when opened, so a
    concurrent append is not seen half-written. A last line without `\\n` is still a line.

    Lines longer than `max_line` are skipped and counted in `report.bad_lines`. `path` is
    opened without following a link (its directories are the caller's to trust); anything
    but a regular file raises `safe_fs.UnsafeEntryError`.
    """
    fd = safe_fs.open_file_for_reading(None, path)
    try:
        yield from _windows(fd, block_size, report, max_line)
    finally:
        os.close(fd)


def _windows(
    fd: int, block_size: int, report: ScanReport | None, max_line: int
) -> Generator[Window]:
    """`iter_windows` of an open file."""
    block_size = min(block_size, max_line + 1)  # a window holds at most one over-long line
    size = os.fstat(fd).st_size
    pos = _lines_end(fd, size)
    buffer = bytearray(min(block_size, size))
    if size and pos == 0:
        yield buffer, 0, 0  # the file is one empty line
    skipping = False  # inside a line longer than `max_line`: streaming past it
    while pos > 0:
        want = min(block_size, pos)
        if len(buffer) < want:
            buffer = bytearray(want)
        offset = pos - want
        if _read_into(fd, buffer, offset, want) < want:
            # Truncated under us: a writer rolled back rows it could not make durable, to the
            # size the file had before them (a line's end). What is before it is unchanged:
            # read on from there, or read this window again if the file grew back meanwhile.
            pos = min(pos, _lines_end(fd, os.fstat(fd).st_size))
            skipping = False
            continue
        if skipping:
            cut = buffer.rfind(b"\n", 0, want)
            pos = offset if cut < 0 else offset + cut
            skipping = cut < 0
            if pos == 0 and cut == 0:
                yield buffer, 0, 0  # the file starts with an empty line
            continue
        start = 0
        if offset > 0:
            cut = buffer.find(b"\n", 0, want)
            if cut < 0:  # one line longer than the window
                if want <= max_line:
                    block_size = min(2 * block_size, max_line + 1)  # read more at once
                    continue
                if report is not None:
                    report.bad_lines += 1
                skipping, pos = True, offset
                continue
            start = cut + 1
        elif want > max_line and buffer.find(b"\n", 0, want) < 0:
            if report is not None:
                report.bad_lines += 1  # the file's first line, and it is too long
            return
        yield buffer, start, want
        pos = offset + start - 1 if offset > 0 else 0


def _memory_windows(data: bytes, report: ScanReport, max_line: int) -> Generator[Window]:
    """`_windows` of lines held in memory (an archive's frame), without copying them: windows
    of at most `max_line + 1` bytes, so that a longer line is found (counted, skipped) as
    `_windows` finds it in a file."""
    if not data:
        return
    pos = len(data) - 1 if data.endswith(b"\n") else len(data)  # where the last line ends
    if pos == 0:
        yield data, 0, 0  # one empty line
        return
    while pos > 0:
        start = pos - max_line - 1
        if start <= 0:
            if pos > max_line and data.find(b"\n", 0, pos) < 0:
                report.bad_lines += 1  # the first line, and it is too long
                return
            yield data, 0, pos
            return
        cut = data.find(b"\n", start, pos)
        if cut < 0:  # a line longer than `max_line`: skip to the line before it
            report.bad_lines += 1
            pos = data.rfind(b"\n", 0, start)
            if pos < 0:
                return
        else:
            yield data, cut + 1, pos
            pos = cut
        if pos == 0:
            yield data, 0, 0  # the frame starts with an empty line


def archive_windows(fd: int, path: Path, report: ScanReport, max_line: int) -> Generator[Window]:
    """An archive's lines, last ones first; what cannot be read is reported in
    `report.damaged` and skipped. The stats cache builds its segments from these too, so that
    it holds what a scan of the archive would find."""
    kind = path.suffix.lstrip(".")
    try:
        table = compressed.frames(fd) if kind == compressed.ZSTD else None
        if table is not None:
            for data in compressed.frames_newest_first(fd, table):
                yield from _memory_windows(data, report, max_line)
            return
        plain = compressed.decompress_to_temporary(fd, kind)
    except compressed.DamagedArchive as exc:
        report.damaged.append(f"{path.name}: {exc}")
        return
    except ImportError:
        report.damaged.append(f"{path.name}: reading it needs the zstandard package")
        return
    try:
        yield from _windows(plain, BLOCK_SIZE, report, max_line)
    finally:
        os.close(plain)


def _read_into(fd: int, buffer: bytearray, offset: int, size: int) -> int:
    """Read `size` bytes at `offset` into the start of `buffer`; how many were read."""
    view = memoryview(buffer)[:size]
    try:
        return os.preadv(fd, [view], offset)
    finally:
        view.release()


def _lines_end(fd: int, size: int) -> int:
    """Where the last line of a file of `size` bytes ends: its final newline ends a line, it
    does not start one."""
    if size and os.pread(fd, 1, size - 1) == b"\n":
        return size - 1
    return size


def iter_chunks(
    path: Path, block_size: int = BLOCK_SIZE, report: ScanReport | None = None
) -> Iterator[bytes]:
    """`iter_windows` as bytes: lines joined by `\\n`, last chunk first."""
    for buffer, start, end in iter_windows(path, block_size, report):
        yield bytes(buffer[start:end])


def iter_line_blocks(
    path: Path, block_size: int = BLOCK_SIZE, report: ScanReport | None = None
) -> Iterator[list[bytes]]:
    """The file's lines, last line first, in lists of about `block_size` bytes (see iter_chunks)."""
    for chunk in iter_chunks(path, block_size, report):
        lines = chunk.split(b"\n")
        lines.reverse()
        yield lines


def _plausible(line: bytes | bytearray) -> bool:
    """Cheap check on lines a prefilter passes over: is this shaped like a JSON object?"""
    line = line.strip()
    return line.startswith(b"{") and line.endswith(b"}")


#: Between two canonical lines (`mantisd.schema.encode_line` puts `schema_version` first).
_CANONICAL_BOUNDARY = b'}\n{"schema_version":'


def _all_plausible(buffer: bytes | bytearray, start: int, end: int) -> bool:
    """True when every line of the window is shaped like a JSON object, checked at C speed.

    Only a fast path: False means "look line by line", not "there is a bad line".
    """
    return (
        buffer.startswith(b"{", start, end)
        and buffer.endswith(b"}", start, end)
        and buffer.count(b"\n", start, end) == buffer.count(_CANONICAL_BOUNDARY, start, end)
    )


def _find_lines(
    buffer: bytes | bytearray,
    start: int,
    end: int,
    needle: bytes,
    found: dict[int, bytes | bytearray],
) -> None:
    """Add the window's lines that contain `needle` to `found`, keyed by their offset."""
    at = buffer.find(needle, start, end)
    while at >= 0:
        line_start = buffer.rfind(b"\n", start, at) + 1 or start
        line_end = buffer.find(b"\n", at, end)
        if line_end < 0:
            line_end = end
        found[line_start] = buffer[line_start:line_end]
        at = buffer.find(needle, line_end, end)


def _candidates(
    window: Window, prefilter: bytes, report: ScanReport, shape_check: bool
) -> list[bytes | bytearray]:
    """Lines of the window (file order) that may hold a row the prefilter wants.

    A line with an escape may spell the needle differently, so it is a candidate too. Other
    lines are only checked for shape (when `shape_check`), without decoding.
    """
    buffer, start, end = window
    found: dict[int, bytes | bytearray] = {}
    _find_lines(buffer, start, end, prefilter, found)
    if buffer.find(b"\\", start, end) >= 0:
        _find_lines(buffer, start, end, b"\\", found)
        found = dict(sorted(found.items()))
    if shape_check and not _all_plausible(buffer, start, end):
        offset = start
        for line in buffer[start:end].split(b"\n"):
            if offset not in found and not _plausible(line):
                report.bad_lines += 1
            offset += len(line) + 1
    return list(found.values())


_run_id = operator.attrgetter("run_id")


def decode_each(
    lines: Iterable[Line],
    decoders: Sequence[msgspec.json.Decoder[Any]],
    bad: Callable[[Line], object],
) -> list[Any]:
    """Each line decoded alone, by the first of `decoders` that takes it; `bad(line)` for a
    line none takes. What a row is, one line at a time, for the reader and the stats cache
    alike."""
    rows = []
    for line in lines:
        for decoder in decoders:
            try:
                rows.append(decoder.decode(line))
                break
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass
        else:
            bad(line)
    return rows


class Scanner:
    """Decodes shards into `row_type`, newest first, with dedup and a `ScanReport`.

    `fallback`: a second, more general struct for lines `row_type` refuses (e.g. a strict fast
    struct first, a permissive one second); a line is bad only when both refuse it.
    """

    def __init__(self, row_type: type[T], *, fallback: type[KeyedRow] | None = None) -> None:
        self._decoders = [(msgspec.json.Decoder(row_type), msgspec.json.Decoder(list[row_type]))]  # type: ignore[valid-type]
        if fallback is not None:
            self._decoders.append(
                (msgspec.json.Decoder(fallback), msgspec.json.Decoder(list[fallback]))  # type: ignore[valid-type]
            )

    def decode_block(self, lines: Sequence[bytes | bytearray], report: ScanReport) -> list[Any]:
        """Decode lines (in order); bad ones are dropped and counted."""
        if not lines:
            return []
        joined = b"[" + b",".join(lines) + b"]"
        for _, many in self._decoders:
            try:
                rows: list[Any] = many.decode(joined)
                if len(rows) == len(lines):
                    return rows
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass
        bad: list[bytes | bytearray] = []
        rows = decode_each(lines, [one for one, _ in self._decoders], bad.append)
        report.bad_lines += len(bad)
        return rows

    def scan_blocks(
        self,
        data_dir: Path,
        report: ScanReport,
        *,
        prefilter: bytes | None = None,
        oldest_month: str | None = None,
        newest_month: str | None = None,
        on_shard: Callable[[int, int, str], None] | None = None,
        shape_check: bool = True,
    ) -> Generator[list[Any]]:
        """Like `scan`, a block (a list of rows, newest first) at a time: less per-row work.

        `shape_check=False` skips the shape check of lines the prefilter passes over, so bad
        lines are counted among the candidate lines only (and cost nothing elsewhere).
        """
        with ExitStack() as stack:
            try:
                dirs = safe_fs.opened_dirs(data_dir, (RUNS_LOG,), create=False)
                _, runs_log = stack.enter_context(dirs)
            except FileNotFoundError:
                return
            files = [
                file
                for file in log_files_in(runs_log, runs_log_dir(data_dir))
                if (newest_month is None or file.month <= newest_month)
                and (oldest_month is None or file.month >= oldest_month)
            ]
            yield from self._scan_shards(runs_log, files, report, prefilter, on_shard, shape_check)

    def _scan_shards(
        self,
        runs_log: int,
        files: list[LogFile],
        report: ScanReport,
        prefilter: bytes | None,
        on_shard: Callable[[int, int, str], None] | None,
        shape_check: bool,
    ) -> Generator[list[Any]]:
        seen: set[int] = set()
        index = 0
        while index < len(files):
            file = files[index]
            index += 1
            if on_shard:
                on_shard(index - 1, len(files), file.month)
            report.shards_read += 1
            try:
                fd = safe_fs.open_file_for_reading(runs_log, file.path)
            except FileNotFoundError:
                if not file.compressed:  # archived since we listed it: read its archive now
                    files[index:index] = archives_since(runs_log, file, files[index:])
                continue  # else deleted (retention) since we listed it
            except safe_fs.UnsafeEntryError:
                continue  # replaced by a link... since we listed it
            if file.compressed:
                windows = archive_windows(fd, file.path, report, MAX_LINE_BYTES)
            else:
                windows = _windows(fd, BLOCK_SIZE, report, MAX_LINE_BYTES)
            try:
                for window in windows:
                    lines: Sequence[bytes | bytearray]
                    if prefilter is None:
                        buffer, start, end = window
                        lines = buffer[start:end].split(b"\n")
                    else:
                        lines = _candidates(window, prefilter, report, shape_check)
                    rows = self.decode_block(lines, report)
                    rows.reverse()
                    keys = list(map(hash, map(_run_id, rows)))
                    fresh = set(keys)
                    if len(fresh) == len(keys) and fresh.isdisjoint(seen):
                        seen |= fresh
                    else:
                        rows = self._dedup(rows, keys, seen, report)
                    if rows:
                        yield rows
            finally:
                windows.close()
                os.close(fd)

    @staticmethod
    def _dedup(rows: list[Any], keys: list[int], seen: set[int], report: ScanReport) -> list[Any]:
        kept = []
        for row, key in zip(rows, keys, strict=True):
            if key in seen:
                report.duplicates += 1
                continue
            seen.add(key)
            kept.append(row)
        return kept

    def scan(
        self,
        data_dir: Path,
        report: ScanReport,
        *,
        prefilter: bytes | None = None,
        oldest_month: str | None = None,
        newest_month: str | None = None,
        on_shard: Callable[[int, int, str], None] | None = None,
    ) -> Generator[Any]:
        """Rows newest first, one per `run_id`.

        `prefilter`: only lines containing these bytes are decoded (others are checked for
        shape only). Months outside `oldest_month`..`newest_month` are never opened.
        """
        blocks = self.scan_blocks(
            data_dir,
            report,
            prefilter=prefilter,
            oldest_month=oldest_month,
            newest_month=newest_month,
            on_shard=on_shard,
        )
        try:
            for rows in blocks:
                yield from rows
        finally:
            blocks.close()


def archives_since(runs_log: int, gone: LogFile, listed: list[LogFile]) -> list[LogFile]:
    """The archives of `gone`'s month that appeared after the listing (`mantis runs archive`
    writes the archive before it removes the plain shard, so its rows are there)."""
    known = {file.path.name for file in listed}
    return [
        file
        for file in log_files_in(runs_log, gone.path.parent)
        if file.month == gone.month and file.compressed and file.path.name not in known
    ]


def json_needle(value: str) -> bytes:
    """`value` as a JSON string literal: a prefilter for rows holding it (e.g. a workflow id)."""
    return msgspec.json.encode(value)
