"""One transaction per batch: the rows, the dead letters and the cursor, committed together.

Rows are copied (`COPY ... FROM STDIN` in binary, psycopg's `write_row` with its C dumpers)
straight into `mantis.runs` under a savepoint; COPY has no conflict handling, so when a run
is already there (a replay, another copy of the log) that COPY fails at once and the batch
goes through a session's temporary staging table and `INSERT ... SELECT ... ON CONFLICT DO
NOTHING` (psycopg docs, "COPY"; style.md): the runs already there are skipped and counted as
duplicates. A catch-up thus costs about one plain COPY, a replay one staging pass. The cursor
row is written in the same transaction, so a crash at any instant keeps all or nothing.

A bad line is dead-lettered once per source and month, whichever of the month's files (its
shard, its archives) hold it (`_dead`). Dead letters of the same bytes (SHA-256 and length)
already there, under any of the month's names, are the same line when they are at this
line's offset (an archive begins with what its shard or the archive it replaced held, at the
same offsets) or at an offset where this file does not hold these bytes: they were read from
other content, such as the late rows `mantis runs archive` merged into the archive at other
offsets, or a shard left beside its archive by an archiver that died between its rename and
its unlink (the archiver too takes a shard line already in the archive, byte for byte, for
the same line). The same bytes again at another offset of this very file are another line.

A record PostgreSQL refuses although `validate` took it (a NUL character in a string, an
integer beyond `bigint`, a key too long for an index) must not block the log behind it: the
batch is then loaded again row by row, each under a savepoint, and the refused rows become
dead letters with PostgreSQL's reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psycopg
from psycopg import errors, postgres, pq, sql
from psycopg.adapt import Dumper

from mantisd.fleet.cursor import Cursor
from mantisd.fleet.migrations import ensure_partitions, existing_partitions
from mantisd.fleet.records import COLUMNS, JSON_COLUMNS, Converted, DeadLetter, Record
from mantisd.schema import BUCKETS, TOTAL
from mantisd.source_id import SourceIdentity

Connection = psycopg.Connection[Any]

_COLUMN_LIST: Final = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
_STAGE: Final = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS mantis_staging "
    "(LIKE mantis.runs INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_COPY_INTO: Final = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)")
_STAGING: Final = sql.Identifier("mantis_staging")
_RUNS: Final = sql.Identifier("mantis", "runs")
#: PostgreSQL type of each of `COLUMNS`, for the binary COPY (psycopg's C dumpers).
_TYPES: Final = [
    "jsonb"
    if name in JSON_COLUMNS
    else "timestamptz"
    if name in ("finished_at", "created_at")
    else "uuid"
    if name == "source_id"
    else "int8"
    if name in ("schema_version", "steps_executed", "viable")
    else "float8"
    if name == TOTAL or name in BUCKETS
    else "text"
    for name in COLUMNS
]
_MERGE: Final = sql.SQL(
    "INSERT INTO mantis.runs ({0}) SELECT {0} FROM mantis_staging ON CONFLICT DO NOTHING"
).format(_COLUMN_LIST)
_INSERT_ONE: Final = sql.SQL(
    "INSERT INTO mantis.runs ({}) VALUES ({}) ON CONFLICT DO NOTHING"
).format(_COLUMN_LIST, sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)))
_DEAD: Final = sql.SQL(
    "INSERT INTO mantis.dead_letters "
    "(source_id, shard, byte_offset, raw_sha256, raw, raw_length, reason) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
#: The offsets and lines (SHA-256, length) of the dead letters of some lines under some names.
_DEAD_ALREADY: Final = sql.SQL(
    "SELECT byte_offset, raw_sha256, raw_length FROM mantis.dead_letters "
    "WHERE source_id = %s AND shard = ANY(%s::text[]) AND raw_sha256 = ANY(%s::bytea[])"
)
_CURSOR: Final = sql.SQL(
    "INSERT INTO mantis.cursors "
    "(source_id, shard, device, inode, fingerprint, byte_offset, tail_sha256) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (source_id, shard) DO UPDATE SET "
    "device = EXCLUDED.device, inode = EXCLUDED.inode, fingerprint = EXCLUDED.fingerprint, "
    "byte_offset = EXCLUDED.byte_offset, tail_sha256 = EXCLUDED.tail_sha256, "
    "updated_at = now()"
)
#: A source's committed cursors (`Cursor` fields in order).
CURSORS: Final = (
    "SELECT shard, device, inode, fingerprint, byte_offset, tail_sha256 FROM mantis.cursors "
    "WHERE source_id = %s"
)
#: What PostgreSQL may refuse in a row `validate` accepted: data exceptions (22: a NUL in
#: text, out-of-range numbers), integrity (23) and program limits (54: index row too long).
_REFUSED: Final = (psycopg.DataError, psycopg.IntegrityError, errors.ProgramLimitExceeded)


#: Whether the file being shipped holds, at an offset, the line of a dead letter.
Holds = Callable[[int, DeadLetter], bool]


@dataclass
class Committed:
    """What one batch did: runs inserted, runs already there, lines dead-lettered."""

    loaded: int = 0
    duplicates: int = 0
    dead_lettered: int = 0


class Loader:
    """Batches into `mantis.runs` for one source over one autocommit connection (schema
    migrated): every transaction is an explicit block."""

    def __init__(self, conn: Connection, source: SourceIdentity, data_dir: Path) -> None:
        self.conn = conn
        self.source_id: uuid.UUID = source.source_id
        with conn.transaction():
            conn.execute(_STAGE)
            conn.execute(
                "INSERT INTO mantis.sources (source_id, label, data_dir) VALUES (%s, %s, %s) "
                "ON CONFLICT (source_id) DO UPDATE SET label = EXCLUDED.label, "
                "data_dir = EXCLUDED.data_dir, last_shipped_at = now()",
                (source.source_id, source.label, str(data_dir)),
            )
        self.partitions = existing_partitions(conn)

    def cursors(self) -> dict[str, Cursor]:
        """This source's committed cursors, by shard name: the truth after any crash."""
        rows = self.conn.execute(CURSORS, (self.source_id,)).fetchall()
        return {row[0]: cursor_of(row) for row in rows}

    def commit(
        self,
        batch: Converted,
        cursor: Cursor,
        *,
        month_files: Sequence[str] = (),
        holds: Holds | None = None,
    ) -> Committed:
        """Load `batch` and move `cursor`, in one transaction (or raise, having done nothing).

        `month_files`: the other names of the file's month, whose dead letters may be its
        lines; `holds`: whether the file holds a dead letter's line at an offset (see the
        module's docstring; without it, the same bytes at another offset are another line).

        A month partition dropped since this connection listed them (retention) is made
        again, and the batch tried once more, rather than its rows refused.
        """
        for attempt in range(2):
            months = batch.months - self.partitions
            if months:
                ensure_partitions(self.conn, months)
                self.partitions |= months
            try:
                with self.conn.transaction():
                    done = self._bulk(batch.records)
                    done.dead_lettered = self._dead(cursor.shard, batch.dead, month_files, holds)
                    self._move(cursor)
                return done
            except errors.CheckViolation as exc:
                if attempt or "no partition" not in str(exc):
                    break
                self.partitions = existing_partitions(self.conn)
            except (*_REFUSED, OverflowError):  # OverflowError: an int beyond int8, dumping
                break  # nothing was committed; find the refused rows one by one
        with self.conn.transaction():
            done, refused = self._one_by_one(batch.records, batch.lines)
            dead = [*batch.dead, *refused]
            done.dead_lettered = self._dead(cursor.shard, dead, month_files, holds)
            self._move(cursor)
        return done

    def _bulk(self, records: Sequence[Record]) -> Committed:
        """Load `records`, skipping the runs already in the table.

        Straight into the table first (under a savepoint): a catch-up then costs one COPY. A
        run already there (a replay, another copy of this log, a duplicate line) fails that
        COPY at once, and the batch goes through the staging table and `ON CONFLICT DO
        NOTHING` instead.
        """
        if not records:
            return Committed()
        try:
            with self.conn.transaction():
                self._copy(_RUNS, records)
            return Committed(loaded=len(records))
        except errors.UniqueViolation:
            pass
        self._copy(_STAGING, records)
        with self.conn.cursor() as cur:
            cur.execute(_MERGE)
            loaded = cur.rowcount
        return Committed(loaded=loaded, duplicates=len(records) - loaded)

    def _copy(self, table: sql.Identifier, records: Sequence[Record]) -> None:
        with self.conn.cursor() as cur:
            cur.adapters.register_dumper(_EncodedJson, _EncodedJsonbDumper)
            with cur.copy(_COPY_INTO.format(table, _COLUMN_LIST)) as copy:
                copy.set_types(_TYPES)
                for record in records:
                    copy.write_row(record)

    def _one_by_one(
        self, records: Sequence[Record], lines: Sequence[tuple[int, bytes]]
    ) -> tuple[Committed, list[DeadLetter]]:
        done, refused = Committed(), []
        with self.conn.cursor() as cur:
            for record, (offset, line) in zip(records, lines, strict=True):
                try:
                    with self.conn.transaction():  # a savepoint
                        cur.execute(_INSERT_ONE, _as_text_json(record))
                except _REFUSED as exc:
                    reason = f"postgresql: {exc.diag.message_primary or exc}"
                    refused.append(DeadLetter.of(offset, line, reason))
                    continue
                done.loaded += cur.rowcount
                done.duplicates += 1 - cur.rowcount
        return done, refused

    def _dead(
        self,
        shard: str,
        dead: Sequence[DeadLetter],
        month_files: Sequence[str],
        holds: Holds | None,
    ) -> int:
        """Insert the dead letters of lines the month's files have none of yet (the module's
        docstring); how many."""
        if not dead:
            return 0
        known: dict[tuple[bytes, int], set[int]] = {}  # (SHA-256, length): offsets
        digests = list({d.digest for d in dead})
        names = [shard, *month_files]
        for offset, digest, length in self.conn.execute(
            _DEAD_ALREADY, (self.source_id, names, digests)
        ):
            known.setdefault((bytes(digest), length), set()).add(offset)
        #: Per line, whether a dead letter of it was read from other content than this file's.
        elsewhere: dict[tuple[bytes, int], bool] = {}
        new = []
        for letter in dead:
            line = (letter.digest, letter.length)
            offsets = known.setdefault(line, set())
            if letter.offset in offsets:
                continue  # this very line, dead-lettered already (maybe under another name)
            if line not in elsewhere:
                elsewhere[line] = holds is not None and not all(
                    holds(offset, letter) for offset in offsets
                )
            if elsewhere[line]:
                continue  # the same line, dead-lettered from another of the month's files
            offsets.add(letter.offset)
            new.append(letter)
        if not new:
            return 0
        with self.conn.cursor() as cur:
            cur.executemany(
                _DEAD,
                [
                    (self.source_id, shard, d.offset, d.digest, d.raw, d.length, _text(d.reason))
                    for d in new
                ],
            )
            return cur.rowcount

    def _move(self, cursor: Cursor) -> None:
        self.conn.execute(
            _CURSOR,
            (
                self.source_id,
                cursor.shard,
                cursor.device,
                cursor.inode,
                cursor.fingerprint,
                cursor.offset,
                cursor.tail,
            ),
        )


class _EncodedJson(bytes):
    """Marks the dumper below; JSONB values of records are plain encoded-JSON `bytes`."""


class _EncodedJsonbDumper(Dumper):
    """Encoded JSON as binary `jsonb` (a version byte, then the text): no decode, no dumps.
    `set_types` picks it for the JSONB columns, by oid."""

    format = pq.Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: Any) -> bytes:
        return b"\x01" + bytes(obj)


_JSON_INDEXES: Final = [COLUMNS.index(name) for name in JSON_COLUMNS]


def _as_text_json(record: Record) -> Record:
    """`record` with its JSONB values as `str`, for a plain INSERT's parameters."""
    values = list(record)
    for index in _JSON_INDEXES:
        if values[index] is not None:
            values[index] = values[index].decode()
    return tuple(values)


def cursor_of(row: Sequence[Any]) -> Cursor:
    """A `Cursor` from a row of `CURSORS` (device and inode are `numeric`: 64-bit unsigned)."""
    shard, device, inode, fingerprint, offset, tail = row
    return Cursor(shard, int(device), int(inode), fingerprint, offset, tail)


def _text(reason: str) -> str:
    """A reason PostgreSQL can store: UTF-8 `text` without NUL (a reason may quote a key)."""
    return reason.encode("utf-8", "backslashreplace").decode().replace("\0", "\\0")
