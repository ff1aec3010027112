"""The rows of one source and month, as the JSON lines DuckDB types into a dataset file.

Rows are read as `stats` reads them (`mantisd.reader.Scanner`: checked, bad lines skipped and
counted, archives included, one row per `run_id`), and keep their extra top-level keys (the
ones the page does not define, which a struct decode drops): each as its canonical JSON text
(`mantisd.stats.canonical`), the very text `--by` groups the files' runs by, under the
`EXTRA` key of the line (a key no struct of the page encodes).

A row whose `schema_version`, `steps_executed` or `viable` is beyond a BIGINT (the row schema
bounds them from below only) is left out and counted: no column every engine reads holds it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple

import msgspec

from mantisd.export.dataset import BIGINT_MAX
from mantisd.reader import CheckedRow, Scanner, ScanReport
from mantisd.schema import ROW_FIELDS, Seconds
from mantisd.stats.canonical import canonical_text

#: Where a line of the rows file holds its row's extra keys (name -> canonical JSON text).
EXTRA: Final = "__extra_keys"

_keys = msgspec.json.Decoder(list[dict[str, msgspec.Raw]])


class _Row(CheckedRow, gc=False):
    """A checked row, as the export writes it for DuckDB to type."""

    wall_time_breakdown: dict[str, Seconds]


class _KnownKeysRow(_Row, forbid_unknown_fields=True, gc=False):
    """A row with the page's keys only (the usual one): decoded first, nothing more to keep."""


class ExportRow:
    """A checked row and its extra keys (None when it has none)."""

    __slots__ = ("row", "run_id", "finished_at", "extra")

    def __init__(self, row: _Row, extra: dict[str, str] | None) -> None:
        self.row = row
        self.run_id = row.run_id  # what the scanner dedups by
        self.finished_at = row.finished_at
        self.extra = extra


class _WithExtras(Scanner):
    """A `Scanner` whose rows are `_KnownKeysRow`s, or `ExportRow`s in a block where a row
    has extra keys (only those blocks pay for finding them)."""

    def __init__(self) -> None:
        super().__init__(_KnownKeysRow, fallback=_Row)

    def decode_block(self, lines: Sequence[bytes | bytearray], report: ScanReport) -> list[Any]:
        rows = super().decode_block(lines, report)
        if all(type(row) is _KnownKeysRow for row in rows):
            return rows
        if len(rows) != len(lines):  # some lines were bad: find the ones the rows came from
            kept, rows, counted = [], [], ScanReport()  # (`report` has counted them)
            for line in lines:
                one = super().decode_block([line], counted)
                if one:
                    kept.append(line)
                    rows += one
            lines = kept
        if not lines:
            return []
        keys = _keys.decode(b"[" + b",".join(lines) + b"]")
        return [ExportRow(row, _extras(raw)) for row, raw in zip(rows, keys, strict=True)]


def _extras(raw: dict[str, msgspec.Raw]) -> dict[str, str] | None:
    names = raw.keys() - ROW_FIELDS
    return {name: canonical_text(raw[name]) for name in sorted(names)} if names else None


class Written(NamedTuple):
    """What `write_rows` wrote: rows, and rows left out for a number beyond a BIGINT."""

    rows: int
    too_large: int


def write_rows(
    path: Path,
    dirs: list[Path],
    month: str,
    report: ScanReport,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> Written:
    """The source's checked rows of `month` in the window, one per `run_id`, as JSON lines
    for DuckDB; how many, and how many were left out for a number beyond a BIGINT."""
    encoder = msgspec.json.Encoder()
    seen: set[str] = set()
    count = too_large = 0
    with path.open("wb") as out:
        for data_dir in dirs:
            blocks = _WithExtras().scan_blocks(
                data_dir, report, oldest_month=month, newest_month=month
            )
            try:
                for block in blocks:
                    kept = []
                    for row in block:
                        if (since is not None and row.finished_at < since) or (
                            until is not None and row.finished_at >= until
                        ):
                            continue
                        if row.run_id in seen:
                            report.duplicates += 1
                            continue
                        seen.add(row.run_id)
                        if _beyond_bigint(row.row if type(row) is ExportRow else row):
                            too_large += 1
                            continue
                        kept.append(row)
                    out.write(_lines(kept, encoder))
                    count += len(kept)
            finally:
                blocks.close()
    return Written(count, too_large)


def _beyond_bigint(row: _Row) -> bool:
    return (
        row.schema_version > BIGINT_MAX
        or row.steps_executed > BIGINT_MAX
        or row.viable > BIGINT_MAX
    )


def _lines(rows: list[Any], encoder: msgspec.json.Encoder) -> bytes:
    """The rows as JSON lines, each `ExportRow`'s extra keys under `EXTRA`."""
    if not any(type(row) is ExportRow for row in rows):
        return encoder.encode_lines(rows)
    lines = []
    for row in rows:
        if type(row) is not ExportRow:
            lines.append(encoder.encode(row))
            continue
        line = encoder.encode(row.row)
        if row.extra is not None:
            line = b"%s,%s:%s}" % (line[:-1], encoder.encode(EXTRA), encoder.encode(row.extra))
        lines.append(line)
    return b"".join(line + b"\n" for line in lines)
