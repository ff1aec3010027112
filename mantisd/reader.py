"""Reading the log newest first: bad lines skipped and counted, one row per `run_id`.

Layer 1 (stdlib + msgspec). Readers never fail on a bad line; they decode into whatever lean
msgspec Struct the caller needs (fields it does not name are never materialised), a block of
lines at a time, and fall back to one line at a time only in a block that holds a bad line.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec

from mantisd.paths import list_shards
from mantisd.schema import Name, Seconds, Timestamp

BLOCK_SIZE = 1 << 20
T = TypeVar("T", bound="KeyedRow")


class KeyedRow(msgspec.Struct, gc=False):
    """Base of reader structs: every row the reader yields has a `run_id`."""

    run_id: Name


class StatRow(KeyedRow, gc=False):
    """The fields `mantis runs stats` / `compare` / `trend` need, validated like `Row`."""

    workflow_id: Name
    status: Annotated[str, msgspec.Meta(pattern="^(succeeded|failed)$")]
    finished_at: Timestamp
    total_time_s: Seconds
    wall_time_breakdown: dict[str, Seconds]


@dataclass
class ScanReport:
    """What a scan skipped, for the one-line summary readers print on stderr."""

    bad_lines: int = 0
    duplicates: int = 0
    shards_read: int = 0

    def summary(self) -> str | None:
        parts = []
        if self.bad_lines:
            parts.append(f"skipped {self.bad_lines} unreadable line(s)")
        if self.duplicates:
            parts.append(f"dropped {self.duplicates} duplicate run_id(s)")
        return "; ".join(parts) or None


def iter_chunks(path: Path, block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """The file's whole lines, last chunk first, in chunks of about `block_size` bytes.

    A chunk is lines joined by `\\n` (in file order, no final `\\n`). Reads only up to the size
    the file had when opened, so a concurrent append is not seen half-written. A last line
    without `\\n` is still yielded (it may be a whole row).
    """
    with open(path, "rb") as f:
        pos = os.fstat(f.fileno()).st_size
        carry = b""
        at_end = True
        while pos > 0:
            start = max(0, pos - block_size)
            f.seek(start)
            chunk = f.read(pos - start) + carry
            pos = start
            if at_end and chunk.endswith(b"\n"):
                chunk = chunk[:-1]  # the file's final newline ends a line, it does not start one
            at_end = False
            if pos > 0:
                cut = chunk.find(b"\n")
                if cut < 0:  # one line longer than a block: keep reading backwards
                    carry = chunk
                    continue
                carry, chunk = chunk[:cut], chunk[cut + 1 :]
            yield chunk


def iter_line_blocks(path: Path, block_size: int = BLOCK_SIZE) -> Iterator[list[bytes]]:
    """The file's lines, last line first, in lists of about `block_size` bytes (see iter_chunks)."""
    for chunk in iter_chunks(path, block_size):
        lines = chunk.split(b"\n")
        lines.reverse()
        yield lines


def _plausible(line: bytes) -> bool:
    """Cheap check on lines a prefilter passes over: is this shaped like a JSON object?"""
    line = line.strip()
    return line.startswith(b"{") and line.endswith(b"}")


#: Between two canonical lines (`mantisd.schema.encode_line` puts `schema_version` first).
_CANONICAL_BOUNDARY = b'}\n{"schema_version":'


def _all_plausible(chunk: bytes) -> bool:
    """True when every line of `chunk` is shaped like a JSON object, checked at C speed.

    Only a fast path: False means "look line by line", not "there is a bad line".
    """
    return (
        chunk.startswith(b"{")
        and chunk.endswith(b"}")
        and chunk.count(b"\n") == chunk.count(_CANONICAL_BOUNDARY)
    )


def _find_lines(chunk: bytes, needle: bytes) -> dict[int, bytes]:
    """The lines of `chunk` that contain `needle`, keyed by their offset."""
    found = {}
    at = chunk.find(needle)
    while at >= 0:
        start = chunk.rfind(b"\n", 0, at) + 1
        end = chunk.find(b"\n", at)
        if end < 0:
            end = len(chunk)
        found[start] = chunk[start:end]
        at = chunk.find(needle, end)
    return found


def _candidates(
    chunk: bytes, prefilter: bytes, report: ScanReport, shape_check: bool
) -> list[bytes]:
    """Lines of `chunk` (file order) that may hold a row the prefilter wants.

    A line with an escape may spell the needle differently, so it is a candidate too. Other
    lines are only checked for shape (when `shape_check`), without decoding.
    """
    found = _find_lines(chunk, prefilter)
    if b"\\" in chunk:
        found.update(_find_lines(chunk, b"\\"))
        found = dict(sorted(found.items()))
    if shape_check and not _all_plausible(chunk):
        wanted = set(found)
        offset = 0
        for line in chunk.split(b"\n"):
            if offset not in wanted and not _plausible(line):
                report.bad_lines += 1
            offset += len(line) + 1
    return list(found.values())


_run_id = operator.attrgetter("run_id")


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

    def decode_block(self, lines: list[bytes], report: ScanReport) -> list[Any]:
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
        rows = []
        for line in lines:
            for one, _ in self._decoders:
                try:
                    rows.append(one.decode(line))
                    break
                except (msgspec.DecodeError, msgspec.ValidationError):
                    pass
            else:
                report.bad_lines += 1
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
        shards = [
            (month, path)
            for month, path in list_shards(data_dir)
            if (newest_month is None or month <= newest_month)
            and (oldest_month is None or month >= oldest_month)
        ]
        seen: set[int] = set()
        for index, (month, path) in enumerate(shards):
            if on_shard:
                on_shard(index, len(shards), month)
            report.shards_read += 1
            try:
                for chunk in iter_chunks(path):
                    if prefilter is None:
                        lines = chunk.split(b"\n")
                    else:
                        lines = _candidates(chunk, prefilter, report, shape_check)
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
            except FileNotFoundError:
                continue  # archived away while we were listing: it is simply not there now

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


def json_needle(value: str) -> bytes:
    """`value` as a JSON string literal: a prefilter for rows holding it (e.g. a workflow id)."""
    return msgspec.json.encode(value)
