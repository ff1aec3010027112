"""Shard lines to table records: validated by `mantisd.schema.validate`, or dead letters.

A record is a tuple in `COLUMNS` order for `mantis.runs`. The nine usual buckets go to their
columns (None where a run does not report one); other bucket names, `cost_breakdown`, `error`
and extra top-level keys go to JSONB columns (`JSON_COLUMNS`) as encoded JSON `bytes`, so
nothing of a row is lost.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from mantisd.fleet.shard_file import KEEP_BYTES, Chunk
from mantisd.schema import BUCKETS, RowError, ValidRow, validate

COLUMNS: Final = (
    "run_id",
    "finished_at",
    "source_id",
    "schema_version",
    "tenant_id",
    "profile_id",
    "workflow_id",
    "plan_signature",
    "model",
    "status",
    "created_at",
    "total_time_s",
    *BUCKETS,
    "other_buckets",
    "cost_breakdown",
    "steps_executed",
    "viable",
    "error",
    "extra",
)
Record = tuple[Any, ...]
#: Columns whose record values are encoded JSON (`bytes`), for the JSONB columns.
JSON_COLUMNS: Final = ("other_buckets", "cost_breakdown", "error", "extra")
_encode = msgspec.json.Encoder().encode
_NINE: Final = frozenset(BUCKETS)
#: How a canonical line without extra keys ends when its run has no error.
_NO_ERROR_END: Final = b'"error":null}\n'


@dataclass(frozen=True)
class DeadLetter:
    """A line that is not a valid row: where it was, its first bytes (`raw`: at most
    `KEEP_BYTES`), its full `length`, why, and the SHA-256 of the whole line (`digest`)."""

    offset: int
    raw: bytes
    length: int
    reason: str
    digest: bytes

    @classmethod
    def of(cls, offset: int, line: bytes, reason: str) -> DeadLetter:
        """The dead letter of `line` (held whole) at `offset`: its first `KEEP_BYTES` kept."""
        digest = hashlib.sha256(line).digest()
        return cls(offset, line[:KEEP_BYTES], len(line), reason, digest)


@dataclass
class Converted:
    """A chunk's records (with each one's line offset and bytes) and its dead letters."""

    records: list[Record] = field(default_factory=list)
    lines: list[tuple[int, bytes]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    #: The months (`YYYY-MM` of `finished_at`) the records fall in: their partitions.
    months: set[str] = field(default_factory=set)


def convert(chunk: Chunk, source_id: uuid.UUID) -> Converted:
    """Validate every line of `chunk` (as the store does) into records or dead letters."""
    out = Converted()
    if chunk.oversized is not None:
        (head,) = chunk.lines
        assert chunk.digest is not None
        reason = f"row: line of {chunk.oversized} bytes, longer than a batch: not a row"
        out.dead.append(DeadLetter(chunk.start, head, chunk.oversized, reason, chunk.digest))
        return out
    offsets: Sequence[int] | None = None
    for index, line in enumerate(chunk.lines):
        try:
            # Accepted when it was stored: this host's clock does not judge it again.
            valid = validate(line, check_future=False)
        except RowError as exc:
            offsets = offsets or chunk.offsets()
            out.dead.append(DeadLetter.of(offsets[index], line, str(exc)))
            continue
        out.records.append(to_record(valid, source_id))
        out.lines.append((index, line))
    if out.lines:  # offsets of the records, for the rare record PostgreSQL refuses
        offsets = offsets or chunk.offsets()
        out.lines = [(offsets[index], line) for index, line in out.lines]
    out.months = {f"{year:04d}-{month:02d}" for year, month in set(map(_month, out.records))}
    return out


def _month(record: Record) -> tuple[int, int]:
    finished: dt.datetime = record[1]
    return finished.year, finished.month


def to_record(valid: ValidRow, source_id: uuid.UUID) -> Record:
    """The `COLUMNS` tuple of a validated row."""
    row = valid.row
    breakdown = row.wall_time_breakdown
    nine = [breakdown.get(name) for name in BUCKETS]
    others = None
    if len(breakdown) != len(nine) - nine.count(None):
        others = _encode({k: v for k, v in breakdown.items() if k not in _NINE})
    error = row.error
    return (
        row.run_id,
        row.finished_at,
        source_id,
        row.schema_version,
        row.tenant_id,
        row.profile_id,
        row.workflow_id,
        row.plan_signature,
        row.model,
        row.status,
        row.created_at,
        row.total_time_s,
        *nine,
        others,
        _encode(row.cost_breakdown),
        row.steps_executed,
        row.viable,
        None if error is None else _encode(error),
        _extras(valid),
    )


def _extras(valid: ValidRow) -> bytes | None:
    """The row's extra top-level keys as a JSON object, or None.

    The canonical line is the schema's keys then the extras (`encode_line`), so the extras
    are what follows the schema's own encoding in the line. The common case is seen without
    encoding the row again: no error, no escape in the line (so no key can hide a quote), and
    the line ends with the `error` key, which extras would follow.
    """
    line = valid.line
    if valid.row.error is None and line.endswith(_NO_ERROR_END) and b"\\" not in line:
        return None
    body = _encode(valid.row)
    if len(line) == len(body) + 1:
        return None
    return b"{" + line[len(body) : -1]
