"""The columnar cache of a data dir: each log file's valid segments, and what to build.

A log file is cached as a chain of segments (`mantisd.stats.segment`) named
`<file>@<start>.seg`, each covering `[start, end)` of the file; the chain starts at 0. A
segment is used only while its fingerprint holds (`mantisd.stats.fingerprint`); the first
one that does not ends the chain, and the file from there on is built again. What lies past
the chain is built too: in pieces of about `SEGMENT_BYTES` by forked workers (a big shard is
split across them) and written, or, when less than `TAIL_BYTES` (the current month's newest
rows, a line being written), decoded in memory for this query only. A small last segment and
a new tail are merged into one, so a growing shard keeps few segments.

Writing never blocks or fails a query: segments go to the user's cache dir, else to a private
temporary dir (`mantisd.stats.cache_dir`); a range that cannot be built or written is read
from the log as before (`Month.exact`). Archives are cached the same way, one segment each.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from mantisd import safe_fs
from mantisd.paths import RUNS_LOG, LogFile, log_files_in, runs_log_dir
from mantisd.reader import archives_since
from mantisd.stats import fingerprint
from mantisd.stats.cache_dir import CacheDir, opened_cache_dir
from mantisd.stats.columns import BuildFailed, SegmentBuilder, archive_blocks, plain_blocks
from mantisd.stats.fanout import fan_out
from mantisd.stats.segment import DamagedSegment, Segment, SegmentFile, Source, write

#: Bytes of JSONL per segment built (and per build item: a bigger range is split).
SEGMENT_BYTES: Final = 128 << 20
#: Below this many new bytes, a file's tail is decoded for the query, not written.
TAIL_BYTES: Final = 4 << 20
#: A leftover temporary file older than this (a worker killed mid-write) is removed.
STALE_SECONDS: Final = 3600
_SEGMENT_NAME: Final = re.compile(r"^(?P<file>.+)@(?P<start>[0-9]+)\.seg$")
_SEARCH: Final = 64 << 10

Loaded = SegmentFile | Segment


def segment_name(file_name: str, start: int) -> str:
    return f"{file_name}@{start}.seg"


@dataclass
class Build:
    """A range of a log file to decode into a segment (`persist`: and write it). `merge`:
    the segment file ending where the range starts, whose rows come first."""

    file: LogFile
    fd: int
    start: int
    end: int
    persist: bool
    merge: Loaded | None = None


@dataclass
class FilePlan:
    """One log file of a month: open, its valid segments (oldest first), what to build."""

    file: LogFile
    fd: int
    size: int
    chain: list[Loaded] = field(default_factory=list)
    builds: list[Build] = field(default_factory=list)


@dataclass
class Month:
    """A month's files in the reader's order, each as its segments, newest first.

    `exact`: some part of it could not be cached (a damaged archive, a range that changed
    while it was built, too many unreadable lines): the month is read from the log."""

    month: str
    files: list[LogFile]
    pieces: list[list[Loaded]] = field(default_factory=list)
    exact: bool = False


def _open_chain(cache: CacheDir, file: LogFile, fd: int, size: int) -> list[Loaded]:
    """The valid segments of the file open as `fd`, oldest first."""
    opened = os.fstat(fd)
    chain: list[Loaded] = []
    start = 0
    while start < size:
        name = segment_name(file.path.name, start)
        seg_fd = cache.open_file(cache.fd, name)
        if seg_fd is None:
            break
        try:
            loaded = SegmentFile(seg_fd, (cache.fd, name))
        except (DamagedSegment, OSError):
            os.close(seg_fd)
            break
        source = loaded.header.source
        if not (
            source.name == file.path.name
            and (source.device, source.inode) == (opened.st_dev, opened.st_ino)
            and source.start == start
            and start < source.end <= size
            and (not file.compressed or source.end == size)
            and fingerprint.digest(fd, source.start, source.end) == source.digest
        ):
            loaded.close()
            break
        chain.append(loaded)
        start = source.end
    return chain


def _plan_file(cache: CacheDir, file: LogFile, fd: int) -> FilePlan:
    size = os.fstat(fd).st_size
    plan = FilePlan(file, fd, size, _open_chain(cache, file, fd, size))
    covered = plan.chain[-1].header.source.end if plan.chain else 0
    if covered >= size:
        return plan
    if file.compressed:
        plan.builds.append(Build(file, fd, 0, size, persist=True))
        return plan
    whole = _line_end_before(fd, covered, size)  # complete lines up to here
    if whole - covered >= TAIL_BYTES:
        last = plan.chain[-1] if plan.chain else None
        if last is not None and _length(last) < SEGMENT_BYTES // 2:
            if whole - covered < SEGMENT_BYTES:  # grow the small last segment
                plan.chain.pop()
                start = last.header.source.start
                plan.builds.append(Build(file, fd, start, whole, persist=True, merge=last))
                covered = whole
        if covered < whole:
            for low, high in _split(fd, covered, whole):
                plan.builds.append(Build(file, fd, low, high, persist=True))
        covered = whole
    if covered < size:
        plan.builds.append(Build(file, fd, covered, size, persist=False))
    return plan


def _length(segment: Loaded) -> int:
    source = segment.header.source
    return source.end - source.start


def _line_end_before(fd: int, low: int, high: int) -> int:
    """The end (after its newline) of the last complete line in `[low, high)`, or `low`."""
    pos = high
    while pos > low:
        start = max(low, pos - _SEARCH)
        cut = os.pread(fd, pos - start, start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        pos = start
    return low


def _line_end_after(fd: int, pos: int, high: int) -> int | None:
    """The end of the line running through `pos` (within `[pos, high)`), or None."""
    while pos < high:
        data = os.pread(fd, min(_SEARCH, high - pos), pos)
        if not data:
            return None
        cut = data.find(b"\n")
        if cut >= 0:
            return pos + cut + 1
        pos += len(data)
    return None


def _split(fd: int, low: int, high: int) -> list[tuple[int, int]]:
    """`[low, high)` (whole lines) in about equal pieces of at most ~`SEGMENT_BYTES`."""
    count = -(-(high - low) // SEGMENT_BYTES)
    cuts = [low]
    for k in range(1, count):
        cut = _line_end_after(fd, low + (high - low) * k // count, high)
        if cut is not None and cuts[-1] < cut < high:
            cuts.append(cut)
    cuts.append(high)
    return list(zip(cuts, cuts[1:], strict=False))


def run_build(build: Build, cache: CacheDir) -> Loaded | tuple[str, int] | None:
    """Decode a build's range: the segment in memory (`persist` False), where it was
    written (its name and directory fd), or None when the range cannot be cached."""
    builder = SegmentBuilder()
    try:
        digest = fingerprint.digest(build.fd, build.start, build.end)
        if build.merge is not None:
            builder.add_segment(build.merge)
        if build.file.compressed:
            archive_blocks(build.fd, build.file.path, builder)
        else:
            start = build.merge.header.source.end if build.merge is not None else build.start
            plain_blocks(build.fd, start, build.end, builder)
        if digest is None or fingerprint.digest(build.fd, build.start, build.end) != digest:
            raise BuildFailed("the file changed while it was read (a writer's rollback)")
        opened = os.fstat(build.fd)
        source = Source(
            build.file.path.name, opened.st_dev, opened.st_ino, build.start, build.end, digest
        )
        segment = builder.finish(source, newest_first=build.file.compressed)
    except (BuildFailed, DamagedSegment, OSError):
        return None
    if not build.persist:
        return segment
    name = segment_name(build.file.path.name, build.start)
    for dir_fd in (cache.fd, cache.spare_fd):
        if dir_fd < 0:
            continue
        try:
            write(dir_fd, name, segment)
        except OSError:
            continue
        return name, dir_fd
    return None


@contextlib.contextmanager
def opened_log(data_dir: Path) -> Iterator[tuple[int, list[LogFile]] | None]:
    """`runs_log/` open, and its files (newest month first); None without one."""
    try:
        dirs = safe_fs.opened_dirs(data_dir, (RUNS_LOG,), create=False)
        with dirs as (_, runs_log):
            yield runs_log, log_files_in(runs_log, runs_log_dir(data_dir))
    except FileNotFoundError:
        yield None


class Cache:
    """The cache of one data dir, for one query: log files open, segments planned."""

    def __init__(
        self, data_dir: Path, runs_log: int, files: Sequence[LogFile], cache: CacheDir
    ) -> None:
        self.data_dir = data_dir
        self.runs_log = runs_log
        self.cache = cache
        self.files = list(files)
        self._stack = contextlib.ExitStack()
        self._plans: dict[str, list[FilePlan]] = {}
        self._wrote = False

    def close(self) -> None:
        if self._wrote and self.cache.persistent:
            self._collect_garbage()
            self.cache.record_origin(self.data_dir)
            self.cache.remove_orphans()
        self._stack.close()

    def _plan_month(self, month: str) -> tuple[list[LogFile], list[FilePlan | None]]:
        """The month's files and their plans (None: gone, or a link, since the listing: the
        reader skips it too). A plain shard archived since the listing is followed by the
        month's archives that appeared since, as the reader reads them (`archives_since`)."""
        files = [f for f in self.files if f.month == month]
        plans: list[FilePlan | None] = []
        index = 0
        while index < len(files):
            file = files[index]
            index += 1
            try:
                fd = safe_fs.open_file_for_reading(self.runs_log, file.path)
            except FileNotFoundError:
                plans.append(None)
                if not file.compressed:  # archived since the listing: its rows are there
                    found = archives_since(self.runs_log, file, files[index:])
                    files[index:index] = found
                    self.files.extend(found)  # their segments are in use: kept
                continue
            except safe_fs.UnsafeEntryError:
                plans.append(None)
                continue
            self._stack.callback(os.close, fd)
            plan = _plan_file(self.cache, file, fd)
            for segment in plan.chain:
                if isinstance(segment, SegmentFile):
                    self._stack.callback(segment.close)
            plans.append(plan)
        self._plans[month] = [plan for plan in plans if plan is not None]
        return files, plans

    def months(self, months: Sequence[str], *, workers: int) -> Generator[Month]:
        """Each month's segments, in order; ranges to build are built by `workers` forked
        processes ahead of the consumer (closing the generator early stops them)."""
        planned = [(month, *self._plan_month(month)) for month in months]
        builds = [b for _, _, plans in planned for plan in plans if plan for b in plan.builds]
        cache = self.cache

        def work(build: Build) -> Loaded | tuple[str, int] | None:
            return run_build(build, cache)

        results = fan_out(work, builds, workers=workers) if builds else iter(())
        try:
            for month, files, plans in planned:
                yield self._assemble(month, files, plans, results)
        finally:
            if hasattr(results, "close"):
                results.close()

    def _assemble(
        self,
        month: str,
        files: list[LogFile],
        plans: list[FilePlan | None],
        results: Iterator[object],
    ) -> Month:
        found = Month(month, files)
        for plan in plans:
            if plan is None:
                found.pieces.append([])
                continue
            segments = list(plan.chain)
            for build in plan.builds:
                result = next(results)
                if result is None:
                    found.exact = True
                elif isinstance(result, tuple):
                    self._wrote = True
                    loaded = self._reopen(result, build)
                    if loaded is None:
                        found.exact = True
                    else:
                        segments.append(loaded)
                else:
                    assert isinstance(result, (Segment, SegmentFile))
                    segments.append(result)
            found.pieces.append(segments[::-1])
        return found

    def _reopen(self, written: tuple[str, int], build: Build) -> SegmentFile | None:
        name, dir_fd = written
        seg_fd = self.cache.open_file(dir_fd, name)
        if seg_fd is None:
            return None
        try:
            loaded = SegmentFile(seg_fd, (dir_fd, name))
        except (DamagedSegment, OSError):
            os.close(seg_fd)
            return None
        self._stack.callback(loaded.close)
        source = loaded.header.source
        if (source.start, source.end) != (build.start, build.end):
            return None  # replaced meanwhile by another query's: read ours next time
        return loaded

    def _collect_garbage(self) -> None:
        """Remove segments no chain uses any more: of files gone from the log, of ranges
        rebuilt differently, and temporary files of killed writers (the caches of data dirs
        that are gone: `CacheDir.remove_orphans`)."""
        present = {f.path.name for f in self.files}
        kept = {
            segment_name(plan.file.path.name, s.header.source.start)
            for plans in self._plans.values()
            for plan in plans
            for s in plan.chain
        }
        kept |= {
            segment_name(plan.file.path.name, b.start)
            for plans in self._plans.values()
            for plan in plans
            for b in plan.builds
        }
        planned = {plan.file.path.name for plans in self._plans.values() for plan in plans}
        now = time.time()
        for name in self.cache.names():
            match = _SEGMENT_NAME.match(name)
            if match:
                owner = match["file"]
                if owner not in present or (owner in planned and name not in kept):
                    self.cache.remove(name)
            elif name.startswith(".") and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    if now - os.stat(name, dir_fd=self.cache.fd).st_mtime > STALE_SECONDS:
                        self.cache.remove(name)


@contextlib.contextmanager
def opened_cache(data_dir: Path) -> Iterator[Cache | None]:
    """The cache of `data_dir` for one query (None when it has no `runs_log/`)."""
    with opened_log(data_dir) as log:
        if log is None:
            yield None
            return
        runs_log, files = log
        with opened_cache_dir(runs_log) as cache_dir:
            cache = Cache(data_dir, runs_log, files, cache_dir)
            try:
                yield cache
            finally:
                cache.close()
