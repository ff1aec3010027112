"""`mantis runs archive`: closed months compressed in place, late rows merged, retention.

A month older than the newest `keep_months` (the current one included) that has a plain
shard is compressed into `<YYYY-MM>.jsonl.zst` (`mantisd.compressed`), merged with the
month's archive when there is one already (late rows: a client's fallback, a pod whose clock
runs behind, land in a fresh plain shard after the month was archived). Every reader reads
archives transparently, so nothing else changes.

Durable, atomic, and safe against concurrent writers (design.md, "Shards"):

1. The shard's size is read under its `flock` (the writers' lock, held for that instant):
   every line below it is committed, fsync'ed, and never rolled back (a writer whose fsync
   fails cuts its file back to where its own rows began). Without any lock, those lines (and
   the old archive's) are compressed into a temporary file in `runs_log/` (a dot name no
   reader matches) and fdatasync'ed.
2. Under the shard's `flock` (held here only for the tail), the shard is checked to still
   end, where step 1 stopped, with the bytes step 1 read (else someone truncated it behind
   the writers' backs: the month starts over), the lines appended since are added, the
   archive finished and fsync'ed, renamed over the month's archive, the directory fsync'ed,
   then the shard unlinked and the directory fsync'ed again.
   A writer that was waiting for the lock finds its file gone from the log and writes its rows
   again to a fresh shard (`mantisd.store`): late rows, merged by the next run.

A crash at any point loses nothing: before the rename the old files are untouched (the
temporary file is removed by the next run); after it, the archive and the shard both hold the
rows, and the next run merges them without doubling a line (a shard line already in the
archive, byte for byte, is not added again). Runs are serialized by an `flock` on
`<data dir>/.archive.lock`.

`delete_older_than` removes every file of the months older than the newest N, and says so.

Layer 1: stdlib (and `zstandard` through `mantisd.compressed`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from mantisd import compressed, safe_fs
from mantisd.paths import RUNS_LOG, LogFile, log_files_in, runs_log_dir

LOCK_FILE: Final = ".archive.lock"
#: The temporary file an archive is written to: never a log file name.
TEMP_RE: Final = re.compile(r"^\.[0-9]{4}-[0-9]{2}\.jsonl\.zst\.[0-9a-f]{16}\.tmp$")
_CHUNK: Final = 1 << 20
#: The shard's last bytes compressed, compared again under the writers' lock.
_SAMPLE: Final = 4096
#: Tries per month when the shard keeps changing under the archiver (truncated, replaced).
_ATTEMPTS: Final = 3


class ArchiveError(Exception):
    """Raised when the data dir cannot be archived at all (another run holds the lock, the
    data dir cannot be opened); the message says why."""


@dataclass
class MonthResult:
    """What was done (or, in a dry run, would be done) to one month."""

    month: str
    #: "archived", "merged", "deleted", "skipped", or the same prefixed "would " (dry run).
    action: str
    #: Files removed (or to be): (name, size in bytes).
    removed: list[tuple[str, int]] = field(default_factory=list)
    #: The archive written: (name, size in bytes).
    archive: tuple[str, int] | None = None
    #: Lines (rows) the archive gained.
    lines: int = 0
    note: str = ""


def month_of(instant: dt.datetime) -> str:
    utc = instant.astimezone(dt.UTC)
    return f"{utc.year:04d}-{utc.month:02d}"


def shift(month: str, months: int) -> str:
    """`month` (`YYYY-MM`) moved by `months` (negative: back)."""
    year, number = map(int, month.split("-"))
    index = year * 12 + number - 1 + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def archive_log(
    data_dir: Path,
    *,
    keep_months: int,
    delete_older_than: int | None = None,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    level: int = compressed.LEVEL,
) -> Iterator[MonthResult]:
    """Archive and delete months as the module says, oldest month first, yielding each
    month's result as soon as it is done. `keep_months` and `delete_older_than` count the
    newest months, the current one (UTC) included: both at least 1. `level`: zstd's."""
    if keep_months < 1 or (delete_older_than is not None and delete_older_than < 1):
        raise ValueError("keep_months and delete_older_than count months: at least 1")
    current = month_of(now or dt.datetime.now(dt.UTC))
    archive_before = shift(current, -(keep_months - 1))
    delete_before = shift(current, -(delete_older_than - 1)) if delete_older_than else None
    with _opened(data_dir, lock=not dry_run, level=level) as log:
        if log is None:
            return  # no runs_log/ yet: nothing to do
        if not dry_run:
            log.remove_temporaries()
        months: dict[str, list[LogFile]] = {}
        for file in log_files_in(log.fd, log.path):
            months.setdefault(file.month, []).append(file)
        for month in sorted(months):
            files = months[month]
            if delete_before is not None and month < delete_before:
                yield log.delete(month, files, dry_run=dry_run)
            elif month < archive_before and any(not f.compressed for f in files):
                yield log.archive(month, files, dry_run=dry_run)


@contextlib.contextmanager
def _opened(data_dir: Path, *, lock: bool, level: int) -> Iterator[_Log | None]:
    try:
        root = safe_fs.open_root(data_dir, create=False)
    except OSError as exc:
        raise ArchiveError(f"cannot open data dir {data_dir}: {exc.strerror or exc}") from None
    with contextlib.ExitStack() as stack:
        stack.callback(os.close, root)
        if lock:
            lock_fd = safe_fs.open_file(root, data_dir, LOCK_FILE, os.O_RDWR)
            stack.callback(os.close, lock_fd)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ArchiveError(
                    f"another `mantis runs archive` is working on {data_dir}: try again later"
                ) from None
        try:
            runs_log = safe_fs.open_dir(root, data_dir, RUNS_LOG, create=False)
        except FileNotFoundError:
            yield None
            return
        stack.callback(os.close, runs_log)
        yield _Log(runs_log, runs_log_dir(data_dir), level)


class _Changed(Exception):
    """The shard changed under the archiver in a way that needs a fresh start."""


@dataclass
class _Log:
    """The `runs_log` directory, open (and the archive lock held)."""

    fd: int
    path: Path
    level: int

    def remove_temporaries(self) -> None:
        """Temporary archives left by a run that died (we hold the lock: none is in use)."""
        for name in os.listdir(self.fd):
            if TEMP_RE.match(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=self.fd)

    def _size(self, name: str) -> int:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_size
        except FileNotFoundError:
            return 0

    def delete(self, month: str, files: list[LogFile], *, dry_run: bool) -> MonthResult:
        removed = [(f.path.name, self._size(f.path.name)) for f in files]
        if dry_run:
            return MonthResult(month, "would delete", removed=removed)
        for file in files:
            with contextlib.ExitStack() as stack:
                if not file.compressed:  # wait for a writer's append to finish first
                    with contextlib.suppress(FileNotFoundError, safe_fs.UnsafeEntryError):
                        fd = safe_fs.open_file_for_reading(self.fd, file.path)
                        stack.callback(os.close, fd)
                        fcntl.flock(fd, fcntl.LOCK_EX)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(file.path.name, dir_fd=self.fd)
        os.fsync(self.fd)
        return MonthResult(month, "deleted", removed=removed)

    def archive(self, month: str, files: list[LogFile], *, dry_run: bool) -> MonthResult:
        plain = next(f for f in files if not f.compressed)
        target = f"{month}.jsonl.{compressed.ZSTD}"
        merging = any(f.path.name == target for f in files)
        action = "merged" if merging else "archived"
        if dry_run:
            removed = [(plain.path.name, self._size(plain.path.name))]
            return MonthResult(month, f"would {'merge' if merging else 'archive'}", removed)
        for _ in range(_ATTEMPTS):
            try:
                return self._archive_once(month, plain, target, merging, action)
            except _Changed:
                continue
            except FileNotFoundError:  # the shard (or its archive) left meanwhile
                return MonthResult(month, "skipped", note="its files changed: nothing done")
            except compressed.DamagedArchive as exc:
                note = (
                    f"{target} is damaged ({exc}): not merged; move it aside (mv {target} "
                    f"{target}.damaged) to archive the month again"
                )
                return MonthResult(month, "skipped", note=note)
        return MonthResult(month, "skipped", note="it kept changing while archived: try again")

    def _archive_once(
        self, month: str, plain: LogFile, target: str, merging: bool, action: str
    ) -> MonthResult:
        fd = safe_fs.open_file_for_reading(self.fd, plain.path)
        try:
            opened = os.fstat(fd)
            temp = f".{target}.{secrets.token_hex(8)}.tmp"
            out = safe_fs.create_new(self.fd, temp, opened.st_mode & 0o777)
            try:
                _same_owner(out, opened)
                writer = compressed.ArchiveWriter(out, level=self.level)
                snapshot = _committed_end(fd)
                if merging:
                    lines, last = _merge_archive(self.fd, target, fd, snapshot, writer)
                else:
                    lines, last = _add_lines(fd, snapshot, writer)
                os.fdatasync(out)  # the bulk is durable before the writers wait on us
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not safe_fs.still_at(self.fd, plain.path.name, safe_fs.identity(fd)):
                    raise _Changed
                size = os.fstat(fd).st_size
                if size < snapshot or os.pread(fd, len(last), snapshot - len(last)) != last:
                    # Truncated (or rewritten) behind the writers' backs since: what we
                    # compressed is not the log any more.
                    raise _Changed
                tail = b"".join(_whole_lines(fd, snapshot, size))
                if tail and not tail.endswith(b"\n"):
                    tail += b"\n"  # a torn tail (a writer died mid-write): its line, ended
                writer.add(tail)
                lines += tail.count(b"\n")
                writer.finish()
                os.fsync(out)
                os.rename(temp, target, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=self.fd)
                raise
            finally:
                os.close(out)
            os.fsync(self.fd)  # the archive's name is durable before the shard goes
            os.unlink(plain.path.name, dir_fd=self.fd)
            os.fsync(self.fd)
        finally:
            os.close(fd)  # releases the writers' lock
        removed = [(plain.path.name, size)]
        return MonthResult(month, action, removed, (target, self._size(target)), lines)


def _same_owner(fd: int, like: os.stat_result) -> None:
    """Give the new archive the shard's mode and, when we may, its owner and group."""
    os.fchmod(fd, like.st_mode & 0o777)
    made = os.fstat(fd)
    if (made.st_uid, made.st_gid) != (like.st_uid, like.st_gid):  # e.g. archived by root
        with contextlib.suppress(PermissionError):
            os.fchown(fd, like.st_uid, like.st_gid)


def _committed_end(fd: int) -> int:
    """Where the shard's committed lines end: its size taken under the writers' lock (no
    writer is then between its write and its fsync, and a rollback later only ever cuts back
    to a size it saw under that lock, never below this one), back to a line end (a writer
    that died mid-write leaves a torn tail, taken with the tail under the lock)."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        size = os.fstat(fd).st_size
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
    return _last_line_end(fd, size)


def _last_line_end(fd: int, size: int) -> int:
    """Where the file's last complete line ends (0 without one): a writer may be mid-write."""
    pos = size
    while pos > 0:
        start = max(0, pos - _CHUNK)
        data = os.pread(fd, pos - start, start)
        cut = data.rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        pos = start
    return 0


def _whole_lines(fd: int, start: int, stop: int) -> Iterator[bytes]:
    """Bytes `[start, stop)` of `fd`, in chunks that end at a line end (the last one may
    not, when `stop` is not a line end). `_Changed` when the file is shorter."""
    carry = b""
    pos = start
    while pos < stop:
        data = os.pread(fd, min(_CHUNK, stop - pos), pos)
        if not data:
            raise _Changed
        pos += len(data)
        data = carry + data
        cut = data.rfind(b"\n") + 1
        carry = data[cut:]
        if cut:
            yield data[:cut]
    if carry:
        yield carry


def _add_lines(fd: int, stop: int, writer: compressed.ArchiveWriter) -> tuple[int, bytes]:
    """The shard's lines up to `stop`, added; how many, and the last bytes added (up to
    `_SAMPLE` of them: checked again under the lock)."""
    lines, last = 0, b""
    for chunk in _whole_lines(fd, 0, stop):
        writer.add(chunk)
        lines += chunk.count(b"\n")
        last = _tail(last, chunk)
    return lines, last


def _merge_archive(
    dir_fd: int, target: str, fd: int, snapshot: int, writer: compressed.ArchiveWriter
) -> tuple[int, bytes]:
    """The old archive's lines, then the shard's lines up to `snapshot` but those already in
    the archive (a run that died between its rename and its unlink left both); returns how
    many of the shard's lines were added, and the last bytes read of the shard.

    The shard is read twice rather than held: first for a digest of each line, then for the
    lines to add, so that a big month of late rows costs memory by its line count only."""
    wanted = {_digest(line) for chunk in _whole_lines(fd, 0, snapshot) for line in _split(chunk)}
    already: set[bytes] = set()
    try:
        old = safe_fs.open_file_for_reading(dir_fd, Path(target))
    except safe_fs.UnsafeEntryError as exc:
        raise compressed.DamagedArchive(str(exc)) from None
    try:
        plain = compressed.decompress_to_temporary(old, compressed.ZSTD)
    finally:
        os.close(old)
    try:
        for chunk in _whole_lines(plain, 0, os.fstat(plain).st_size):
            if not chunk.endswith(b"\n"):
                chunk += b"\n"
            writer.add(chunk)
            if wanted:
                already.update(d for d in map(_digest, _split(chunk)) if d in wanted)
    except _Changed:
        raise OSError(errno.EIO, "a temporary file shrank") from None
    finally:
        os.close(plain)
    added, last = 0, b""
    for chunk in _whole_lines(fd, 0, snapshot):
        last = _tail(last, chunk)
        if already:
            kept = [line for line in _split(chunk) if _digest(line) not in already]
            chunk = b"".join(line + b"\n" for line in kept)
        writer.add(chunk)
        added += chunk.count(b"\n")
    return added, last


def _tail(last: bytes, chunk: bytes) -> bytes:
    """The last `_SAMPLE` bytes of `last + chunk`, without copying a whole chunk."""
    return chunk[-_SAMPLE:] if len(chunk) >= _SAMPLE else (last + chunk)[-_SAMPLE:]


def _split(chunk: bytes) -> list[bytes]:
    """The lines of a chunk of whole lines, without their `\\n`."""
    return chunk[:-1].split(b"\n") if chunk else []


def _digest(line: bytes) -> bytes:
    """What tells a line from any other (128 bits), kept instead of the line itself."""
    return hashlib.blake2b(line, digest_size=16).digest()
