"""Durable appends to monthly JSONL shards, shared by the daemon and the client fallback.

Every writer follows the same protocol (design.md, "Shards"): exclusive `flock`, repair of a
torn tail, the whole payload in one `O_APPEND` `write()`, `fsync`, a directory `fsync` when the
file is new. Anything short of a successful `fsync` is rolled back and raised as `StoreError`:
a caller may only acknowledge rows when `append` returned.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterable
from pathlib import Path

from mantisd.paths import shard_path
from mantisd.schema import ValidRow

FILE_MODE = 0o660
DIR_MODE = 0o770
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
_REOPEN_ATTEMPTS = 8


class StoreError(Exception):
    """Raised when rows could not be made durable; nothing of the failed append remains."""

    def __init__(self, path: Path, message: str, err: int | None = None) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.errno = err


def append(path: Path, payload: bytes) -> None:
    """Append whole `\\n`-terminated lines to `path` durably, or raise `StoreError`."""
    if not payload.endswith(b"\n"):
        raise ValueError("payload must be whole lines")
    try:
        _ensure_dir(path.parent)
        fd, created = _open_locked(path)
    except OSError as exc:
        raise StoreError(path, f"cannot open shard: {exc.strerror or exc}", exc.errno) from exc
    try:
        previous_size = _append_locked(path, fd, payload)
    except OSError as exc:
        raise StoreError(path, f"append failed: {exc.strerror or exc}", exc.errno) from exc
    finally:
        os.close(fd)  # also releases the flock
    # An empty file may have been created by a writer whose append then failed before its own
    # directory fsync: whoever first puts rows into it makes its name durable.
    if created or previous_size == 0:
        try:
            _fsync_dir(path.parent)  # the new file's name must survive a crash too
        except OSError as exc:
            raise StoreError(path, f"directory fsync failed: {exc.strerror}", exc.errno) from exc


def append_rows(data_dir: Path, rows: Iterable[ValidRow]) -> None:
    """Append rows, one `write()` + `fsync` per month shard (used by the client fallback)."""
    for path, lines in group_by_shard(data_dir, rows).items():
        append(path, b"".join(lines))


def group_by_shard(data_dir: Path, rows: Iterable[ValidRow]) -> dict[Path, list[bytes]]:
    """Each row's line under the shard of its `finished_at` month, arrival order kept."""
    groups: dict[Path, list[bytes]] = {}
    for row in rows:
        groups.setdefault(shard_path(data_dir, row.month), []).append(row.line)
    return groups


def _append_locked(path: Path, fd: int, payload: bytes) -> int:
    """Write and fsync `payload` under the caller's lock; return the file's previous size."""
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        payload = b"\n" + payload  # terminate a torn tail left by a crash before our rows
    try:
        written = os.write(fd, payload)
    except OSError as exc:
        _rollback(fd, size)
        raise StoreError(path, f"write failed: {exc.strerror}", exc.errno) from exc
    if written != len(payload):
        cause = _short_write_cause(fd, payload[written:])
        _rollback(fd, size)
        raise StoreError(
            path,
            f"short write ({written} of {len(payload)} bytes), rolled back: {os.strerror(cause)}",
            cause,
        )
    try:
        os.fsync(fd)
    except OSError as exc:
        # After a failed fsync the kernel may mark the pages clean: these rows are not durable,
        # and no later fsync can say otherwise. Undo them; the caller reports the failure.
        _rollback(fd, size)
        raise StoreError(path, f"fsync failed: {exc.strerror}", exc.errno) from exc
    return size


def _short_write_cause(fd: int, rest: bytes) -> int:
    """Why a write stopped short (ENOSPC, EFBIG...): the kernel tells on the next write."""
    try:
        os.write(fd, rest)  # rolled back by the caller whatever happens
    except OSError as exc:
        return exc.errno or errno.EIO
    return errno.ENOSPC


def _rollback(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass  # e.g. a character device such as /dev/full: nothing was kept there anyway


def _open_locked(path: Path) -> tuple[int, bool]:
    """Open and lock the file now at `path`, even if it is renamed or deleted meanwhile."""
    for _ in range(_REOPEN_ATTEMPTS):
        created = False
        try:
            fd = os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, FILE_MODE)
            created = True
        except FileExistsError:
            try:
                fd = os.open(path, _OPEN_FLAGS)
            except FileNotFoundError:
                continue  # deleted between the two opens
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            opened = os.fstat(fd)
            current = os.stat(path)
        except FileNotFoundError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        if (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino):
            return fd, created
        os.close(fd)  # renamed away while we waited for the lock: write to the new file
    raise OSError(errno.ESTALE, "shard keeps being replaced while opening it")


def _ensure_dir(directory: Path) -> None:
    """Create the shard directory (and parents); fsync each parent that gained an entry."""
    if directory.is_dir():
        return
    missing = []
    for d in (directory, *directory.parents):
        if d.exists():
            break
        missing.append(d)
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    for d in reversed(missing):
        _fsync_dir(d.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
