"""The fleet schema in PostgreSQL, created and migrated by the tool itself.

Everything lives in the schema `mantis`; `mantis.schema_version` holds one row per applied
migration. `migrate` applies the missing ones in one transaction under an advisory lock (many
shippers may start at once), on every shipper start and by `mantis db init`. Readers only
check the version (`require_schema`): a query never changes the database.

Tables (version 1):

- `runs`: one row per run, keyed by `(run_id, finished_at)` so that a replay inserts nothing
  (a primary key on a partitioned table must include the partition key), partitioned by month
  of `finished_at` (`runs_2026_03`, created on demand by `ensure_partitions`). Typed columns
  for the page's keys; the nine usual buckets as one `double precision` column each (a
  percentile over a column is about twice as fast as over a JSONB member: bench/README.md);
  other bucket names in `other_buckets`, `cost_breakdown` and `error` as JSONB, extra
  top-level keys in `extra`: nothing of a row is lost.
- `sources`: one row per data dir (`source_id`) with its label (the pod's name).
- `cursors`: per source and shard, how far the shipper got (committed with the rows), and
  what identifies the file: device, inode, hashes of its first line and of the bytes before
  the offset. An archive of a month has its own row, by its name, in the same columns (of
  its decompressed content: `mantisd.fleet.cursor`).
- `dead_letters`: lines that are not valid rows, with source, shard, offset, raw bytes, reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, TypeAlias

import psycopg
from psycopg import sql

from mantisd.fleet.database import FleetError
from mantisd.schema import BUCKETS

Connection: TypeAlias = "psycopg.Connection[Any]"
SCHEMA: Final = "mantis"
#: Any constant shared by every shipper: serialises migrations and partition creation.
_LOCK_KEY: Final = 0x6D616E746973  # "mantis"

_BUCKET_COLUMNS = ",\n    ".join(f"{name} double precision" for name in BUCKETS)

_V1 = f"""
CREATE SCHEMA IF NOT EXISTS mantis;
CREATE TABLE mantis.schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE mantis.sources (
    source_id uuid PRIMARY KEY,
    label text NOT NULL,
    data_dir text,
    first_shipped_at timestamptz NOT NULL DEFAULT now(),
    last_shipped_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE mantis.runs (
    run_id text NOT NULL,
    finished_at timestamptz NOT NULL,
    source_id uuid NOT NULL,
    schema_version bigint NOT NULL,
    tenant_id text NOT NULL,
    profile_id text NOT NULL,
    workflow_id text NOT NULL,
    plan_signature text,
    model text,
    status text NOT NULL,
    created_at timestamptz NOT NULL,
    total_time_s double precision NOT NULL,
    {_BUCKET_COLUMNS},
    other_buckets jsonb,
    cost_breakdown jsonb NOT NULL,
    steps_executed bigint NOT NULL,
    viable bigint NOT NULL,
    error jsonb,
    extra jsonb,
    shipped_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, finished_at)
) PARTITION BY RANGE (finished_at);
CREATE INDEX runs_workflow_finished ON mantis.runs (workflow_id, finished_at);
COMMENT ON TABLE mantis.runs IS
    'One row per run (mantis runs ship); partitions runs_YYYY_MM by month of finished_at.';
COMMENT ON COLUMN mantis.runs.other_buckets IS
    'wall_time_breakdown entries other than the nine usual buckets (which have columns).';
COMMENT ON COLUMN mantis.runs.extra IS 'Top-level keys of the row beyond the page''s schema.';
CREATE TABLE mantis.cursors (
    source_id uuid NOT NULL REFERENCES mantis.sources,
    shard text NOT NULL,
    device numeric(20) NOT NULL,
    inode numeric(20) NOT NULL,
    fingerprint bytea,
    byte_offset bigint NOT NULL,
    tail_sha256 bytea,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, shard)
);
COMMENT ON TABLE mantis.cursors IS
    'How far each source''s shard was shipped: committed in the same transaction as its rows.';
CREATE TABLE mantis.dead_letters (
    source_id uuid NOT NULL REFERENCES mantis.sources,
    shard text NOT NULL,
    byte_offset bigint NOT NULL,
    raw_sha256 bytea NOT NULL,
    raw bytea NOT NULL,
    raw_length bigint NOT NULL,
    reason text NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, shard, byte_offset, raw_sha256)
);
COMMENT ON TABLE mantis.dead_letters IS
    'Shard lines that are not valid rows (raw: at most the first 64 KiB of the line).';
"""

#: Migration i + 1 is `MIGRATIONS[i]`; append new ones, never edit a shipped one.
MIGRATIONS: Final = (_V1,)
LATEST: Final = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    """The applied schema version; 0 when the database has no mantis schema yet."""
    row = conn.execute("SELECT to_regclass('mantis.schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM mantis.schema_version").fetchone()
    return int(row[0]) if row else 0


def _too_new(version: int) -> FleetError:
    return FleetError(
        f"the database's mantis schema is version {version}, newer than this mantis knows "
        f"({LATEST}): upgrade mantisd"
    )


def migrate(conn: Connection) -> int:
    """Create or upgrade the schema to `LATEST`; returns the version. Commits."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        version = current_version(conn)
        if version > LATEST:
            raise _too_new(version)
        for number in range(version + 1, LATEST + 1):
            conn.execute(MIGRATIONS[number - 1].encode())
            conn.execute("INSERT INTO mantis.schema_version (version) VALUES (%s)", (number,))
    return max(version, LATEST)


def require_schema(conn: Connection) -> None:
    """FleetError unless the schema is there and not newer than this version knows."""
    version = current_version(conn)
    if version == 0:
        raise FleetError(
            "no mantis tables in this database yet: ship a data dir to it first "
            "(mantis runs ship --to URL), or create them with mantis db init --db URL"
        )
    if version > LATEST:
        raise _too_new(version)


def partition_name(month: str) -> str:
    """`runs_2026_03` for `2026-03`."""
    return "runs_" + month.replace("-", "_")


def existing_partitions(conn: Connection) -> set[str]:
    """The months (`YYYY-MM`) that already have a partition."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'mantis.runs'::regclass"
    ).fetchall()
    return {name.removeprefix("runs_").replace("_", "-") for (name,) in rows}


def ensure_partitions(conn: Connection, months: Iterable[str]) -> None:
    """Create the month partitions that are missing, in a transaction of their own (commits).

    Every shipper may reach a new month at the same instant: the advisory lock and `IF NOT
    EXISTS` make them agree. A partition covers `[month-01 00:00Z, next month-01 00:00Z)`.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        for month in sorted(months):
            year, number = int(month[:4]), int(month[5:])
            following = f"{year + number // 12:04d}-{number % 12 + 1:02d}"
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF mantis.runs "
                    "FOR VALUES FROM ({}) TO ({})"
                ).format(
                    sql.Identifier(SCHEMA, partition_name(month)),
                    sql.Literal(f"{month}-01 00:00:00+00"),
                    sql.Literal(f"{following}-01 00:00:00+00"),
                )
            )
