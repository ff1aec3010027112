"""Reading a month shard forward from a byte offset, complete lines only.

The shipper's side of the log (`mantisd.reader` reads newest first; this reads oldest first,
from where the last commit stopped). The same functions read an archive's decompressed
content (`mantisd.fleet.archive_file`), given as a `ReadAt` instead of a file descriptor.

Nothing in the data dir is trusted (design.md, "Trust"): `runs_log/` and each shard are
opened relative to their directory's fd without following links, and only a regular file is
read (`mantisd.safe_fs`).

A line counts only once its `\\n` is there: a partial last line (a writer mid-append, or a
torn tail left by a crash, which the next writer terminates) is never consumed. The size read
is taken under a shared `flock` for a moment: writers append and fsync under an exclusive one
and roll back a failed append under it, so the bytes below that size are ones the writers have
finished with.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import time
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Final, Protocol

from mantisd import safe_fs
from mantisd.paths import RUNS_LOG, SHARD_RE

#: The fingerprint covers the first line, or its first this-many bytes when it is longer.
FINGERPRINT_BYTES: Final = 4096
#: A line longer than a batch is not a row (the daemon refuses lines over 64 KiB): it is
#: dead-lettered with its first `KEEP_BYTES`, and skipped without being held in memory.
KEEP_BYTES: Final = 64 * 1024
_SCAN_BLOCK: Final = 1 << 20
#: How long to wait for a writer's exclusive lock before reading without it.
_LOCK_WAIT_S: Final = 2.0


class ReadAt(Protocol):
    """Bytes read by offset, like `os.pread` on a file: an archive's decompressed content
    (`mantisd.fleet.archive_file`). Fewer bytes than asked: the readable content ends there."""

    def pread(self, size: int, offset: int) -> bytes: ...


#: What the functions below read: a file descriptor, or decompressed content.
Content = int | ReadAt


def pread(content: Content, size: int, offset: int) -> bytes:
    """`size` bytes of `content` at `offset` (fewer at its end)."""
    if isinstance(content, int):
        return os.pread(content, size, offset)
    return content.pread(size, offset)


@dataclass(frozen=True)
class OpenShard:
    """A shard opened for reading: its fd, identity (device, inode), stable size and mtime."""

    name: str
    fd: int
    device: int
    inode: int
    size: int
    mtime_ns: int

    @property
    def content(self) -> Content:
        return self.fd

    @property
    def seen(self) -> tuple[int, ...]:
        """What `quick_identity` says of the shard while nothing was written to it since."""
        return self.device, self.inode, self.size, self.mtime_ns

    @property
    def damage(self) -> None:
        """A shard is never damaged (an archive may be: `mantisd.fleet.archive_file`)."""
        return None

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class Chunk:
    """Complete lines from `start` (without their `\\n`); `end` is just past the last one.

    `oversized`: the one line is longer than the batch; `lines` holds its first `KEEP_BYTES`,
    `oversized` its full length and `digest` the SHA-256 of all of it.
    """

    start: int
    lines: list[bytes]
    end: int
    oversized: int | None = None
    digest: bytes | None = None

    def offsets(self) -> list[int]:
        """Each line's byte offset in the shard (computed only when a caller needs them)."""
        if self.oversized is not None:
            return [self.start]
        steps = accumulate((len(line) + 1 for line in self.lines[:-1]), initial=self.start)
        return list(steps)


def open_log_dir(data_dir: Path) -> int | None:
    """`runs_log/` opened without following a link; None when nothing was logged yet."""
    root = safe_fs.open_root(data_dir, create=False)
    try:
        return safe_fs.open_dir(root, data_dir, RUNS_LOG, create=False)
    except FileNotFoundError:
        return None
    finally:
        os.close(root)


def shard_names(log_fd: int) -> list[str]:
    """Month shard names in `runs_log/`, oldest first (other names are not shards)."""
    return sorted(name for name in os.listdir(log_fd) if SHARD_RE.match(name))


def quick_identity(log_fd: int, name: str) -> tuple[int, ...] | None:
    """(device, inode, size, mtime) of the entry, not following a link; None when it is gone.

    Unchanged since a pass read the shard: nothing to read (any write, truncation or
    replacement changes one of them), so `--follow` skips a quiet shard without opening it.
    """
    try:
        found = os.stat(name, dir_fd=log_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns


def open_shard(log_fd: int, log_path: Path, name: str) -> OpenShard:
    """Open a shard read-only (never a link, FIFO or device: `UnsafeEntryError`)."""
    fd = safe_fs.open_file_for_reading(log_fd, log_path / name)
    try:
        found = os.fstat(fd)
        size = stable_size(fd)
    except BaseException:
        os.close(fd)
        raise
    return OpenShard(name, fd, found.st_dev, found.st_ino, size, found.st_mtime_ns)


def stable_size(fd: int) -> int:
    """The file's size when no writer is mid-append (taken under a shared `flock`).

    A writer that holds its lock for longer than two seconds (a stuck disk) does not stall the
    shipper: the size is then read without the lock, and only complete lines count anyway.
    """
    deadline = time.monotonic() + _LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.001)
                continue
            return os.fstat(fd).st_size
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
                raise
            return os.fstat(fd).st_size  # a filesystem without locks
        try:
            return os.fstat(fd).st_size
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def fingerprint(content: Content, size: int) -> bytes | None:
    """SHA-256 of the first line (with its `\\n`; its first 4 KiB when longer), or None while
    the file holds no complete first line. A shard whose fingerprint changed is another file,
    whatever its inode says."""
    head = pread(content, min(FINGERPRINT_BYTES, size), 0)
    cut = head.find(b"\n")
    if cut >= 0:
        head = head[: cut + 1]
    elif len(head) < FINGERPRINT_BYTES:
        return None
    return hashlib.sha256(head).digest()


def tail_mark(content: Content, offset: int) -> bytes | None:
    """SHA-256 of the (at most 4 KiB) bytes just before `offset`: a file truncated and grown
    back past a cursor between two runs has other bytes there (appends never change them)."""
    if offset <= 0:
        return None
    start = max(0, offset - FINGERPRINT_BYTES)
    return hashlib.sha256(pread(content, offset - start, start)).digest()


def read_chunk(content: Content, start: int, stop: int, *, max_bytes: int, max_lines: int) -> Chunk:
    """The complete lines in `[start, stop)`, at most `max_bytes` and `max_lines` of them."""
    want = min(max_bytes, stop - start)
    if want <= 0:
        return Chunk(start, [], start)
    data = pread(content, want, start)
    cut = data.rfind(b"\n")
    if cut >= 0:
        lines = data[:cut].split(b"\n")
        if len(lines) <= max_lines:
            return Chunk(start, lines, start + cut + 1)
        lines = lines[:max_lines]
        return Chunk(start, lines, start + sum(map(len, lines)) + len(lines))
    if len(data) < max_bytes:
        return Chunk(start, [], start)  # an incomplete last line: left for later
    return _oversized(content, start, stop, data)


def _oversized(content: Content, start: int, stop: int, data: bytes) -> Chunk:
    """The line at `start` is longer than a batch (`data`, its first bytes, holds no `\n`):
    find its end, and hash it, without holding it."""
    whole = hashlib.sha256(data)
    pos = start + len(data)
    while pos < stop:
        block = pread(content, min(_SCAN_BLOCK, stop - pos), pos)
        if not block:
            break
        newline = block.find(b"\n")
        if newline >= 0:
            whole.update(block[:newline])
            end = pos + newline + 1
            head = data[:KEEP_BYTES]
            return Chunk(start, [head], end, oversized=end - start - 1, digest=whole.digest())
        whole.update(block)
        pos += len(block)
    return Chunk(start, [], start)  # not complete yet
