"""`mantis runs ship`: a data dir's shards into PostgreSQL, exactly once in effect.

At-least-once parts make an exactly-once whole: every batch of complete lines is loaded with
its cursor in one transaction (`Loader.commit`), so a crash at any instant leaves the database
either before or after the batch, and the next run resumes from the committed cursor (never
from memory). What a resume reads twice (a shard replaced, truncated or rewritten is read
again from the start) is skipped by the table's key. The database being down never loses a
line: nothing is marked shipped until its transaction committed; `--follow` retries with
backoff forever, a one-shot run stops with an error.

Archives are shipped as well, each as a file of its own with a cursor of its own
(`mantisd.fleet.log_files`, `cursor.archive_start`): a month archived while the shipper was
behind (the database away for a while, the shipper stopped) is shipped from where its shard's
cursor stopped, and an archive made again with late rows from where the old one's stopped.
An archive nothing proves shipped is read from its start: what was shipped of it already is
skipped by the key and counted as duplicates. Its content is decompressed a frame at a time,
never a month in memory. A damaged archive is named on stderr (and fails a one-shot run) but
blocks nothing: the lines before the damage are shipped, every other file too, and
`--follow` goes on; it is read again once it changes (restored, or moved aside).

Files are read oldest month first; while one batch is in the database, a helper thread reads
and validates the next. `--follow` polls: a quiet file costs one `stat` per pass, so the lag
from a row's fsync to it being queryable is at most the poll interval plus one batch.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

import psycopg

from mantisd import compressed, safe_fs
from mantisd.fleet.cursor import Cursor
from mantisd.fleet.database import first_line
from mantisd.fleet.loader import Committed, Loader
from mantisd.fleet.log_files import (
    LineCheck,
    Opened,
    log_files,
    open_log_file,
    other_month_files,
    start_of,
)
from mantisd.fleet.migrations import migrate
from mantisd.fleet.records import Converted, convert
from mantisd.fleet.shard_file import Chunk, open_log_dir, quick_identity, read_chunk, tail_mark
from mantisd.paths import LogFile, runs_log_dir
from mantisd.source_id import SourceIdentity

#: A batch: at most this many bytes of lines (about 25,000 rows of ~650 bytes) ...
BATCH_BYTES: Final = 16 << 20
#: ... and at most this many lines.
BATCH_ROWS: Final = 40_000
#: `--follow`: seconds between two passes over the shards.
POLL_INTERVAL: Final = 0.25
#: Backoff while the database is unreachable: doubling from the first delay up to the last.
BACKOFF_FIRST: Final = 0.5
BACKOFF_MAX: Final = 30.0
#: `--follow` says what it shipped at most this often.
PROGRESS_EVERY_S: Final = 60.0
CONNECT_OPTIONS: Final = {
    # Autocommit: every transaction is an explicit `conn.transaction()` block, so none is
    # ever left open by a lone statement (which would turn the next block into a savepoint).
    "autocommit": True,
    "application_name": "mantis-ship",
    "connect_timeout": 10,
    # A dead server behind a live TCP path is noticed within a minute (ignored on sockets).
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


@dataclass
class ShipReport:
    """What a run shipped, per file (shard or archive, in the order they were read), and what
    went wrong, per file (the latest word: `--follow` meets the same problem pass after pass)."""

    shards: dict[str, Committed] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def add(self, shard: str, done: Committed) -> None:
        tally = self.shards.setdefault(shard, Committed())
        tally.loaded += done.loaded
        tally.duplicates += done.duplicates
        tally.dead_lettered += done.dead_lettered

    def total(self) -> Committed:
        total = Committed()
        for done in self.shards.values():
            total.loaded += done.loaded
            total.duplicates += done.duplicates
            total.dead_lettered += done.dead_lettered
        return total


class Stopper:
    """SIGTERM/SIGINT set a flag and wake `wait` at once (a self-pipe): `--follow` stops after
    the batch in flight, never in the middle of one."""

    def __init__(self) -> None:
        self._stopped = False
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.set()

    def set(self) -> None:
        self._stopped = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, b"x")

    def is_set(self) -> bool:
        return self._stopped

    def wait(self, timeout: float) -> None:
        """Sleep `timeout` seconds, or less when a stop arrives."""
        if not self._stopped:
            select.select([self._read], [], [], timeout)

    def close(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        os.close(self._read)
        os.close(self._write)


def backoff_delays() -> Iterator[float]:
    """0.5 s, 1 s, 2 s ... up to 30 s, each jittered by up to ±20% (many pods, one server)."""
    delay = BACKOFF_FIRST
    while True:
        yield delay * random.uniform(0.8, 1.2)
        delay = min(delay * 2, BACKOFF_MAX)


class Shipper:
    """Ships one data dir, as `source`, to the database at `url`."""

    def __init__(
        self,
        data_dir: Path,
        url: str,
        source: SourceIdentity,
        *,
        batch_bytes: int = BATCH_BYTES,
        batch_rows: int = BATCH_ROWS,
        say: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.data_dir = data_dir
        self.log_path = runs_log_dir(data_dir)
        self.url = url
        self.source = source
        self.batch_bytes = batch_bytes
        self.batch_rows = batch_rows
        self.say = say
        self.conn: psycopg.Connection[Any] | None = None
        self.loader: Loader | None = None
        self.cursors: dict[str, Cursor] = {}
        self._announced: set[tuple[str, int, int]] = set()
        self._complained: set[str] = set()
        #: Per shard, its (device, inode, size, mtime) when this process last read it to the end.
        self._read_up_to: dict[str, tuple[int, ...]] = {}
        self._reader: ThreadPoolExecutor | None = None

    def connect(self) -> None:
        """Connect, create or migrate the schema, register the source, load the cursors."""
        self.close()
        self.conn = psycopg.connect(self.url, **CONNECT_OPTIONS)  # type: ignore[arg-type]
        migrate(self.conn)
        self.loader = Loader(self.conn, self.source, self.data_dir)
        self.cursors = self.loader.cursors()
        self._read_up_to.clear()  # the database's cursors decide again (it may be a restore)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.shutdown()
            self._reader = None
        conn, self.conn, self.loader = self.conn, None, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def run_once(self, report: ShipReport, stop: Stopper | None = None) -> ShipReport:
        """Ship every complete line not yet shipped into `report`; database errors propagate
        (`report` then holds what was committed before)."""
        try:
            self.connect()
            self.ship_pass(report, stop)
        finally:
            self.close()
        return report

    def follow(self, stop: Stopper, *, interval: float = POLL_INTERVAL) -> ShipReport:
        """Ship, then keep tailing the shards every `interval` seconds until `stop`.

        A database error closes the connection and retries with backoff, forever: the cursors
        are read again from the database on reconnect, so nothing is skipped or marked shipped
        that was not committed.
        """
        report, delays = ShipReport(), backoff_delays()
        down_since: float | None = None
        said_at, said_total = time.monotonic(), Committed()
        try:
            while not stop.is_set():
                try:
                    if self.loader is None:
                        self.connect()
                        if down_since is not None:
                            away = time.monotonic() - down_since
                            self.say(f"database reachable again after {away:.1f}s")
                            down_since, delays = None, backoff_delays()
                    self.ship_pass(report, stop)
                except psycopg.Error as exc:
                    self.close()
                    down_since = down_since or time.monotonic()
                    delay = next(delays)
                    reason = first_line(exc, self.url)
                    self.say(f"database unavailable ({reason}): retrying in {delay:.1f}s")
                    stop.wait(delay)
                    continue
                if time.monotonic() - said_at >= PROGRESS_EVERY_S:
                    said_total = self._say_progress(report, said_total)
                    said_at = time.monotonic()
                stop.wait(interval)
        finally:
            self.close()
        return report

    def _say_progress(self, report: ShipReport, before: Committed) -> Committed:
        now = report.total()
        loaded = now.loaded - before.loaded
        dead = now.dead_lettered - before.dead_lettered
        if loaded or dead:
            self.say(f"shipped {loaded} run(s), dead-lettered {dead} line(s) since last said")
        return now

    def ship_pass(self, report: ShipReport, stop: Stopper | None = None) -> None:
        """One pass over every shard and archive (`log_files` order)."""
        log_fd = open_log_dir(self.data_dir)
        if log_fd is None:
            return  # nothing logged yet
        try:
            files = log_files(log_fd, self.log_path)
            read: set[str] = set()
            while files:
                if stop is not None and stop.is_set():
                    return
                file = files.pop(0)
                read.add(file.path.name)
                try:
                    self._ship_file(log_fd, file, report, stop)
                except FileNotFoundError:
                    if not file.compressed:  # archived since the listing: ship its archive now
                        files[:0] = self._archives_since(log_fd, file, read)
                except ImportError:
                    self._problem(report, file, f"{file.path}: not shipped: needs zstandard")
                except OSError as exc:  # unreadable, or not a regular file: never followed
                    problem = f"{file.path}: not shipped: {exc.strerror or exc}"
                    if isinstance(exc, safe_fs.UnsafeEntryError):
                        problem = f"{exc.filename}: not shipped: {exc.strerror}"
                    self._problem(report, file, problem)
        finally:
            os.close(log_fd)

    def _archives_since(self, log_fd: int, gone: LogFile, read: set[str]) -> list[LogFile]:
        """The archives of `gone`'s month not read in this pass (`mantis runs archive` writes
        the archive before it removes the shard, so the shard's rows are in them)."""
        return [
            file
            for file in log_files(log_fd, self.log_path)
            if file.month == gone.month and file.compressed and file.path.name not in read
        ]

    def _problem(self, report: ShipReport, file: LogFile, problem: str) -> None:
        """Count a file that could not be shipped (in full), once however many passes meet
        it; say it once per process."""
        report.problems[str(file.path)] = problem
        if problem not in self._complained:
            self._complained.add(problem)
            self.say(problem)

    def _ship_file(
        self, log_fd: int, file: LogFile, report: ShipReport, stop: Stopper | None
    ) -> None:
        """Ship what is new in one shard or archive, then say if the archive is damaged."""
        name = file.path.name
        seen = quick_identity(log_fd, name)
        if seen is not None and self._read_up_to.get(name) == seen:
            return  # untouched since this process read it to its end
        try:
            opened = open_log_file(log_fd, self.log_path, file)
        except compressed.DamagedArchive as exc:  # no seek table, and damaged: none readable
            if seen is not None:
                self._read_up_to[name] = seen  # tried again once it changes
            self._problem(
                report,
                file,
                f"{file.path}: damaged ({exc}): not shipped; restore it, or move it aside",
            )
            return
        try:
            read_to_end = self._ship_opened(opened, file, report, stop)
        finally:
            opened.close()
        if not read_to_end:
            return
        self._read_up_to[name] = opened.seen
        if opened.damage is not None:
            self._problem(
                report,
                file,
                f"{file.path}: damaged ({opened.damage}): shipped up to where it can be read; "
                "restore it, or move it aside",
            )

    def _ship_opened(
        self, opened: Opened, file: LogFile, report: ShipReport, stop: Stopper | None
    ) -> bool:
        """Ship `opened` batch after batch; True when it was read to its end (not stopped).

        The next batch is read and validated in a helper thread while the current one is in
        the database (the connection waits without the GIL): both CPUs work during a catch-up.
        """
        assert self.loader is not None
        name = opened.name
        position, mark, why = start_of(opened, file, self.cursors)
        if why and (name, opened.device, opened.inode) not in self._announced:
            self._announced.add((name, opened.device, opened.inode))
            self.say(f"{name}: {why}: shipping it again from the start")
        month_files, holds = other_month_files(file), LineCheck(opened)
        ahead: Future[tuple[Chunk, Converted, bytes | None]] | None = None
        try:
            ahead = self._prepare(opened, position)
            while True:
                if stop is not None and stop.is_set():
                    return False
                chunk, batch, tail = ahead.result()
                ahead = None
                if chunk.end == position:  # only an incomplete last line is left, if anything
                    break
                if chunk.end < opened.size:
                    ahead = self._prepare(opened, chunk.end)
                moved = Cursor(name, opened.device, opened.inode, mark, chunk.end, tail)
                done = self.loader.commit(batch, moved, month_files=month_files, holds=holds)
                report.add(name, done)
                self.cursors[name] = moved
                position = chunk.end
                if ahead is None:
                    break
        finally:
            if ahead is not None:
                wait([ahead])  # its reads use the file: never close it under them
        # A file started past where its own cursor says (an archive going on from its
        # shard's) gets a cursor of its own, so that it never depends on the other's again.
        here = Cursor(
            name, opened.device, opened.inode, mark, position, tail_mark(opened.content, position)
        )
        if position and self.cursors.get(name) != here:
            self.loader.commit(Converted(), here)
            self.cursors[name] = here
        return True

    def _prepare(
        self, opened: Opened, position: int
    ) -> Future[tuple[Chunk, Converted, bytes | None]]:
        """Read and validate the batch at `position` (and the tail mark at its end) in the
        helper thread."""

        def work() -> tuple[Chunk, Converted, bytes | None]:
            chunk = read_chunk(
                opened.content,
                position,
                opened.size,
                max_bytes=self.batch_bytes,
                max_lines=self.batch_rows,
            )
            batch = convert(chunk, self.source.source_id)
            return chunk, batch, tail_mark(opened.content, chunk.end)

        if self._reader is None:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="mantis-ship-read")
        return self._reader.submit(work)
