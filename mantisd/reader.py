"""Reading the log newest first: bad lines skipped and counted, one row per `run_id`.

Layer 1 (stdlib + msgspec). Readers never fail on a bad line; they decode into whatever lean
msgspec Struct the caller needs (fields it does not name are never materialised), a block of
lines at a time, and fall back to one line at a time only in a block that holds a bad line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
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


def iter_line_blocks(path: Path, block_size: int = BLOCK_SIZE) -> Iterator[list[bytes]]:
    """The file's lines, last line first, in lists of about `block_size` bytes.

    Reads only up to the size the file had when opened, so a concurrent append is not seen
    half-written. A last line without `\\n` is still yielded (it may be a whole row).
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
            lines = chunk.split(b"\n")
            carry = lines.pop(0) if pos > 0 else b""
            if at_end and lines and lines[-1] == b"":
                lines.pop()  # the file's final newline ends a line, it does not start one
            at_end = False
            lines.reverse()
            if lines:
                yield lines


def _plausible(line: bytes) -> bool:
    """Cheap check on lines a prefilter passes over: is this shaped like a JSON object?"""
    line = line.strip()
    return line.startswith(b"{") and line.endswith(b"}")


class Scanner:
    """Decodes shards into `row_type`, newest first, with dedup and a `ScanReport`."""

    def __init__(self, row_type: type[T]) -> None:
        self._one = msgspec.json.Decoder(row_type)
        self._many = msgspec.json.Decoder(list[row_type])  # type: ignore[valid-type]

    def decode_block(self, lines: list[bytes], report: ScanReport) -> list[Any]:
        """Decode lines (in order); bad ones are dropped and counted."""
        if not lines:
            return []
        try:
            rows: list[Any] = self._many.decode(b"[" + b",".join(lines) + b"]")
            if len(rows) == len(lines):
                return rows
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
        rows = []
        for line in lines:
            try:
                rows.append(self._one.decode(line))
            except (msgspec.DecodeError, msgspec.ValidationError):
                report.bad_lines += 1
        return rows

    def scan(
        self,
        data_dir: Path,
        report: ScanReport,
        *,
        prefilter: bytes | None = None,
        oldest_month: str | None = None,
        newest_month: str | None = None,
        on_shard: Callable[[int, int, str], None] | None = None,
    ) -> Iterator[Any]:
        """Rows newest first, one per `run_id`.

        `prefilter`: only lines containing these bytes are decoded (others are checked for
        shape only). Months outside `oldest_month`..`newest_month` are never opened.
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
                blocks = iter_line_blocks(path)
                for lines in blocks:
                    if prefilter is not None:
                        wanted = []
                        for line in lines:
                            # a line with an escape may spell the needle differently: decode it
                            if prefilter in line or b"\\" in line:
                                wanted.append(line)
                            elif not _plausible(line):
                                report.bad_lines += 1
                        lines = wanted
                    for row in self.decode_block(lines, report):
                        key = hash(row.run_id)
                        if key in seen:
                            report.duplicates += 1
                            continue
                        seen.add(key)
                        yield row
            except FileNotFoundError:
                continue  # archived away while we were listing: it is simply not there now


def json_needle(value: str) -> bytes:
    """`value` as a JSON string literal: a prefilter for rows holding it (e.g. a workflow id)."""
    return msgspec.json.encode(value)
