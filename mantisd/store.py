"""Durable appends to monthly JSONL shards, shared by the daemon and the client fallback.

Every writer follows the same protocol (design.md, "Shards"): exclusive `flock`, repair of a
torn tail, a directory `fsync` before the first rows go into a new file, the whole payload in
one `O_APPEND` `write()`, `fsync`, and a check that the file is still in the log afterwards.
Anything short of a successful `fsync` is rolled back and raised as `StoreError`: a caller may
only acknowledge rows when `append` returned.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
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


def append(path: Path, payload: bytes, *, lock_timeout: float | None = None) -> None:
    """Append whole `\\n`-terminated lines to `path` durably, or raise `StoreError`.

    `lock_timeout`: give up (StoreError) when another writer holds the shard longer than this
    (the client's bound); None waits as long as it takes (the daemon's writer).
    """
    if not payload.endswith(b"\n"):
        raise ValueError("payload must be whole lines")
    try:
        ensure_dir(path.parent)
    except OSError as exc:
        raise StoreError(
            path, f"cannot create directory: {exc.strerror or exc}", exc.errno
        ) from exc
    for _ in range(_REOPEN_ATTEMPTS):
        try:
            fd = _open_locked(path, lock_timeout)
        except OSError as exc:
            raise StoreError(path, f"cannot open shard: {exc.strerror or exc}", exc.errno) from exc
        try:
            _append_locked(path, fd, payload)
            if _is_at(path, fd):
                return
            # Renamed or deleted after we locked it: the rows left the log with that file.
            # Write them again to the file now at `path` (a duplicate is fine, a loss is not).
        except OSError as exc:
            raise StoreError(path, f"append failed: {exc.strerror or exc}", exc.errno) from exc
        finally:
            os.close(fd)  # also releases the flock
    raise StoreError(path, "shard keeps being moved away while appending", errno.ESTALE)


def append_rows(
    data_dir: Path, rows: Iterable[ValidRow], *, lock_timeout: float | None = None
) -> None:
    """Append rows, one `write()` + `fsync` per month shard (used by the client fallback)."""
    for path, lines in group_by_shard(data_dir, rows).items():
        append(path, b"".join(lines), lock_timeout=lock_timeout)


def group_by_shard(data_dir: Path, rows: Iterable[ValidRow]) -> dict[Path, list[bytes]]:
    """Each row's line under the shard of its `finished_at` month, arrival order kept."""
    groups: dict[Path, list[bytes]] = {}
    for row in rows:
        groups.setdefault(shard_path(data_dir, row.month), []).append(row.line)
    return groups


def _append_locked(path: Path, fd: int, payload: bytes) -> None:
    """Write and fsync `payload` under the caller's lock."""
    size = os.fstat(fd).st_size
    if size == 0:
        # Whoever first puts rows into a file makes its name durable first (its creator may
        # have failed or died before doing so): no row is acknowledged in a file a crash
        # could take away.
        try:
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StoreError(path, f"directory fsync failed: {exc.strerror}", exc.errno) from exc
    elif os.pread(fd, 1, size - 1) != b"\n":
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


def _open_locked(path: Path, lock_timeout: float | None) -> int:
    """Open and lock the file now at `path`, even if it is renamed or deleted meanwhile."""
    for _ in range(_REOPEN_ATTEMPTS):
        try:
            fd = os.open(path, _OPEN_FLAGS | os.O_CREAT, FILE_MODE)
        except FileNotFoundError:
            ensure_dir(path.parent)  # the directory itself was just moved away
            continue
        try:
            _lock(fd, lock_timeout)
            if _is_at(path, fd):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # renamed away while we waited for the lock: write to the new file
    raise OSError(errno.ESTALE, "shard keeps being replaced while opening it")


def _lock(fd: int, timeout: float | None) -> None:
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise OSError(errno.ETIMEDOUT, "another writer holds the shard's lock") from None
            time.sleep(0.002)


def _is_at(path: Path, fd: int) -> bool:
    """True while `fd` is still the file at `path` (not renamed away, not deleted)."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)


def ensure_dir(directory: Path) -> None:
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
