"""`mantis runs export --parquet DIR`: the log as a Hive-partitioned Parquet dataset.

One file per source and month (`mantisd.export.dataset`), each written by DuckDB into a
private temporary directory inside DIR (`.export-*`, which no engine reads), fsync'ed, and
renamed into `month=YYYY-MM/` (then that directory fsync'ed): a reader sees the old file or
the new one, never half of one, whenever the export is interrupted.

Rows are read as `stats` reads them (checked, bad lines skipped and counted, archives
included, one row per `run_id` per source: `mantisd.export.rows`, which keeps their extra
top-level keys too) and typed explicitly. A `run_id` already in
another source's file of the same month (a file named as the export names them: any other
`*.parquet` there is not read) is left out, so the dataset holds one row per run and every
engine's plain query is right.

The dataset may be the only good copy of a month: a month whose reading met a damaged archive
never replaces the file exported before (without one, the readable part is written, stamped so
that every export reads the month again). That month, and one DuckDB could not write, is
reported (`ExportResult.failed`), the file before it kept, and the export goes on.

Incremental: each file carries, in its Parquet key-value metadata, a fingerprint of the
month's files it came from (names, sizes, modification times) and of the window; a month
whose fingerprint is unchanged is not rewritten. The current month changes, so it is.

Exports into one DIR are serialized by an `flock` on `DIR/.mantis-export.lock`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from mantisd import safe_fs
from mantisd.export.dataset import (
    COLUMNS,
    FINGERPRINT_KEY,
    is_data_file,
    month_dir,
    require_duckdb,
    sql_string,
)
from mantisd.export.rows import EXTRA, write_rows
from mantisd.paths import list_log_files
from mantisd.reader import ScanReport
from mantisd.schema import BUCKETS, TOTAL
from mantisd.source_id import ensure_source

LOCK_FILE: Final = ".mantis-export.lock"
TEMP_PREFIX: Final = ".export-"
#: Part of every fingerprint: a new layout rewrites every file.
LAYOUT_VERSION: Final = "3"  # 2: extra_keys; 3: schema_version BIGINT
#: Before the fingerprint of a file written from a month whose reading met damage: it never
#: matches, so the month is read (and the damage reported) again by every export.
PARTIAL: Final = "partial:"


class ExportError(Exception):
    """Raised when the export cannot run (DIR locked, unusable); the message says why."""


@dataclass
class ExportResult:
    """One file of the dataset: written, unchanged, or kept as it was (`failed` says why)."""

    month: str
    source_id: str
    label: str
    path: Path
    written: bool
    rows: int = 0
    #: Runs left out because another source's file of the month holds them.
    elsewhere: int = 0
    #: Runs left out because a number of theirs is beyond a BIGINT (`dataset.BIGINT_MAX`).
    too_large: int = 0
    #: Why the file does not hold the month's runs: a damaged archive met reading it (the file
    #: exported before is kept; without one, the readable part is written), or DuckDB's error
    #: (nothing written). None when all went well.
    failed: str | None = None


@dataclass
class _Source:
    source_id: str
    label: str
    dirs: list[Path]


def export_parquet(
    target: Path,
    data_dirs: Sequence[Path],
    report: ScanReport,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> Iterator[ExportResult]:
    """Export every month of `data_dirs` in the window (`since <= finished_at < until`) into
    the dataset at `target`, yielding each file as it is done; `report` counts what the
    reads skipped."""
    duckdb = require_duckdb()
    sources = _sources(data_dirs)
    target.mkdir(parents=True, exist_ok=True)
    with _locked(target), contextlib.ExitStack() as stack:
        for stale in target.glob(f"{TEMP_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)  # an export that died: we hold the lock
        work = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=target))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        conn = duckdb.connect()
        stack.callback(conn.close)
        conn.execute("SET enable_progress_bar = false")  # stdout says what was written
        for source in sources:
            for month in _months(source.dirs, since, until):
                yield _export_month(
                    conn, duckdb.Error, target, work, source, month, report, since, until
                )


def _sources(data_dirs: Sequence[Path]) -> list[_Source]:
    """The data dirs by identity (copies of one pod's data dir are one source)."""
    found: dict[str, _Source] = {}
    for data_dir in data_dirs:
        identity = ensure_source(data_dir)
        key = str(identity.source_id)
        found.setdefault(key, _Source(key, identity.label, [])).dirs.append(data_dir)
    return list(found.values())


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    root = safe_fs.open_root(target, create=True)
    try:
        fd = safe_fs.open_file(root, target, LOCK_FILE, os.O_RDWR)
    finally:
        os.close(root)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportError(f"another export into {target} is running: try again later") from None
        yield
    finally:
        os.close(fd)


def _months(dirs: list[Path], since: dt.datetime | None, until: dt.datetime | None) -> list[str]:
    low = None if since is None else _month_of(since)
    high = None if until is None else _month_of(until - dt.timedelta(microseconds=1))
    months = {f.month for d in dirs for f in list_log_files(d)}
    return sorted(m for m in months if (low is None or m >= low) and (high is None or m <= high))


def _month_of(instant: dt.datetime) -> str:
    utc = instant.astimezone(dt.UTC)
    return f"{utc.year:04d}-{utc.month:02d}"


def fingerprint(
    dirs: list[Path], month: str, since: dt.datetime | None, until: dt.datetime | None
) -> str:
    """What a month's file was made from: its log files' names, sizes and mtimes in every
    dir of the source, and the window."""
    parts: list[Any] = [LAYOUT_VERSION, month, str(since), str(until)]
    for data_dir in dirs:
        for file in list_log_files(data_dir):
            if file.month == month:
                with contextlib.suppress(FileNotFoundError):
                    stat = file.path.stat(follow_symlinks=False)
                    parts.append((file.path.name, stat.st_size, stat.st_mtime_ns))
    return hashlib.sha256(msgspec.json.encode(parts)).hexdigest()


def _stored_fingerprint(conn: Any, path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        rows = conn.execute(
            "SELECT value::VARCHAR FROM parquet_kv_metadata(?) WHERE key::VARCHAR = ?",
            [str(path), FINGERPRINT_KEY],
        ).fetchall()
    except Exception:  # unreadable: written again
        return None
    return str(rows[0][0]) if rows else None


def _export_month(
    conn: Any,
    duckdb_error: type[Exception],
    target: Path,
    work: Path,
    source: _Source,
    month: str,
    report: ScanReport,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> ExportResult:
    final = month_dir(target, month) / f"{source.source_id}.parquet"
    stamp = fingerprint(source.dirs, month, since, until)
    result = ExportResult(month, source.source_id, source.label, final, written=False)
    stored = _stored_fingerprint(conn, final)
    if stored == stamp:
        return result
    rows_file = work / "rows.jsonl"
    read_report = ScanReport()
    try:
        read = write_rows(rows_file, source.dirs, month, read_report, since, until)
    finally:
        report.add(read_report)
    result.too_large = read.too_large
    if read_report.damaged:
        damage = "; ".join(dict.fromkeys(read_report.damaged))
        if os.path.lexists(final):
            before = " (the readable part only)" if stored == PARTIAL + stamp else ""
            result.failed = (
                f"not rewritten: reading the month met a damaged archive ({damage}); the file "
                f"exported before{before} is kept as it was (restore the archive from a copy, "
                "then export again)"
            )
            return result
        result.failed = (
            f"written from the readable part only: reading the month met a damaged archive "
            f"({damage}); every export reads the month again until the archive is restored"
        )
        stamp = PARTIAL + stamp
    others = [
        p
        for p in month_dir(target, month).glob("*.parquet")
        if p.name != final.name and is_data_file(p.name)
    ]
    part = work / "part.parquet"
    select = _select(rows_file, source, others)
    try:
        conn.execute(
            f"COPY ({select}) TO {sql_string(part)} (FORMAT parquet, COMPRESSION zstd, "
            f"KV_METADATA {{{FINGERPRINT_KEY}: {sql_string(stamp)}}})"
        )
        (rows,) = conn.execute(f"SELECT count(*) FROM read_parquet({sql_string(part)})").fetchone()
    except duckdb_error as exc:
        result.failed = f"not written: DuckDB: {_first_line(exc)}"
        if os.path.lexists(final):
            result.failed += "; the file exported before is kept as it was"
        return result
    _fsync_path(part)
    _publish(target, month, part, final.name)
    result.written, result.rows, result.elsewhere = True, rows, read.rows - rows
    return result


def _first_line(exc: Exception) -> str:
    """DuckDB's message without the SQL it quotes after it."""
    return str(exc).strip().partition("\n")[0]


def _select(rows_file: Path, source: _Source, others: list[Path]) -> str:
    """The typed SELECT of the dataset's columns from the rows file."""
    read_columns = {
        **{name: kind for name, kind in COLUMNS[:11]},
        "wall_time_breakdown": "MAP(VARCHAR, DOUBLE)",
        "cost_breakdown": "JSON",
        "steps_executed": "BIGINT",
        "viable": "BIGINT",
        "error": "JSON",
        EXTRA: "MAP(VARCHAR, VARCHAR)",
    }
    columns = ", ".join(f"{sql_string(n)}: {sql_string(t)}" for n, t in read_columns.items())
    nine = ", ".join(map(sql_string, (*BUCKETS, TOTAL)))
    values = {
        **{name: name for name, _ in COLUMNS[:11]},
        **{b: f"wall_time_breakdown[{sql_string(b)}]" for b in BUCKETS},
        "other_buckets": "map_from_entries(list_filter(map_entries(wall_time_breakdown), "
        f"lambda entry: entry.key NOT IN ({nine})))",
        "cost_breakdown": "cost_breakdown::VARCHAR",
        "steps_executed": "steps_executed",
        "viable": "viable",
        "error": "error::VARCHAR",
        "extra_keys": EXTRA,
        "source_id": sql_string(source.source_id),
        "source_label": sql_string(source.label),
    }
    assert list(values) == [name for name, _ in COLUMNS]
    projection = ", ".join(f"CAST({values[n]} AS {t}) AS {n}" for n, t in COLUMNS)
    select = (
        f"SELECT {projection} FROM read_json({sql_string(rows_file)}, "
        f"format = 'newline_delimited', columns = {{{columns}}})"
    )
    if others:
        files = ", ".join(map(sql_string, others))
        select += f" WHERE run_id NOT IN (SELECT run_id FROM read_parquet([{files}]))"
    return select + " ORDER BY finished_at, run_id"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(target: Path, month: str, part: Path, name: str) -> None:
    """Rename the finished file into `month=.../name` (replacing the old one) durably."""
    partition = month_dir(target, month).name
    with safe_fs.opened_dirs(target, (partition,), create=True) as (_, month_fd):
        work = os.open(part.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.rename(part.name, name, src_dir_fd=work, dst_dir_fd=month_fd)
        finally:
            os.close(work)
        os.fsync(month_fd)
