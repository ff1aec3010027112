"""Durable appends to monthly JSONL shards, shared by the daemon and the client fallback.

Every writer follows the same protocol (design.md, "Shards"): exclusive `flock`, repair of a
torn tail, a directory `fsync` before the first rows go into a new file, the whole payload in
one `O_APPEND` `write()`, `fsync`, and a check that the file is still in the log afterwards.
Anything short of a successful `fsync` is rolled back and raised as `StoreError`: a caller may
only acknowledge rows when `append` returned.

Nothing below the data dir is trusted (design.md, "Trust"): the shard's directory and the
shard are opened through `mantisd.safe_fs` (relative to directory fds, never following a
link); a link, FIFO, directory... in their place is moved aside and a fresh one used.
`mantisd.safe_fs.moved_aside_count()` tells how many entries this process moved aside.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mantisd import safe_fs
from mantisd.paths import shard_path
from mantisd.schema import ValidRow

FILE_MODE = safe_fs.FILE_MODE
DIR_MODE = safe_fs.DIR_MODE
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND
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
    _append_fresh(path, payload, lock_timeout).close()


class OpenShards:
    """Shards kept open between appends, for a long-lived writer (the daemon's).

    Opening a shard safely costs three no-follow opens, a `flock` and a dozen `stat`s: on a
    disk whose fsync takes 0.1 ms, as much again as the write itself. A held shard costs a
    `flock` and six `stat`s per append: under its lock, before and after writing, the held
    file is proved to be the one the log names (an archiver, an operator or a planted link may
    have moved it meanwhile); when it is not, it is closed and the shard opened afresh, as
    `append` would. Between appends nothing is locked: other writers go on as before.
    """

    def __init__(self) -> None:
        self._held: dict[Path, _Shard] = {}

    def append(self, path: Path, payload: bytes, *, lock_timeout: float | None = None) -> None:
        """As `append`, through the shard held open for `path` when there is one."""
        held = self._held.pop(path, None)
        if held is not None:
            try:
                if _append_held(held, payload, lock_timeout):
                    self._held[path] = held
                    return
            except BaseException:
                held.close()
                raise
            held.close()  # moved away since: the rows go to the file at `path` now
        self._held[path] = _append_fresh(path, payload, lock_timeout)

    def close(self, keep: Iterable[Path] = ()) -> None:
        """Close the shards held, but those in `keep` (the ones a writer still appends to): a
        deleted or archived month's file must not stay allocated behind its back."""
        kept = set(keep)
        for path in [path for path in self._held if path not in kept]:
            self._held.pop(path).close()

    def __len__(self) -> int:
        return len(self._held)


def _append_fresh(path: Path, payload: bytes, lock_timeout: float | None) -> _Shard:
    """Open, lock and append to the shard now at `path`; return it unlocked, still open."""
    if not payload.endswith(b"\n"):
        raise ValueError("payload must be whole lines")
    for _ in range(_REOPEN_ATTEMPTS):
        shard = _open_locked(path, lock_timeout)
        try:
            in_log = _append_in_log(shard, payload)
            _unlock(shard.fd)
        except BaseException:
            shard.close()
            raise
        if in_log:
            return shard
        # Renamed or deleted after we locked it: the rows left the log with that file.
        # Write them again to the file now at `path` (a duplicate is fine, a loss is not).
        shard.close()
    raise StoreError(path, "shard keeps being moved away while appending", errno.ESTALE)


def _append_held(shard: _Shard, payload: bytes, lock_timeout: float | None) -> bool:
    """Lock a held shard and append to it if it is still the log's; False when it is not
    (nothing written) or was moved away while being written (rows to be written again)."""
    if not payload.endswith(b"\n"):
        raise ValueError("payload must be whole lines")
    _locking.add(shard.fd)
    try:
        try:
            _lock(shard.fd, lock_timeout)
        except OSError as exc:
            message = f"cannot lock shard: {exc.strerror or exc}"
            raise StoreError(shard.path, message, exc.errno) from exc
        return shard.in_log() and _append_in_log(shard, payload)
    finally:
        _unlock(shard.fd)


def _append_in_log(shard: _Shard, payload: bytes) -> bool:
    """Write and fsync `payload` under the caller's lock; True when the file is still the
    one at `shard.path` afterwards."""
    try:
        _append_locked(shard, payload)
        return shard.in_log()
    except OSError as exc:
        raise StoreError(shard.path, f"append failed: {exc.strerror or exc}", exc.errno) from exc


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


@dataclass
class _Shard:
    """A locked shard, and the data dir and shard directory it was opened through."""

    path: Path
    root: str  # the data dir, `path.parent.parent`
    dir_name: str
    root_fd: int
    dir_fd: int
    fd: int
    ids: tuple[safe_fs.Identity, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.ids = tuple(map(safe_fs.identity, (self.root_fd, self.dir_fd, self.fd)))

    def in_log(self) -> bool:
        """True while the locked file is still the one the log names `path`."""
        root_id, dir_id, file_id = self.ids
        return (
            safe_fs.root_still_at(self.root, root_id)
            and safe_fs.still_at(self.root_fd, self.dir_name, dir_id)
            and safe_fs.still_at(self.dir_fd, self.path.name, file_id)
        )

    def close(self) -> None:
        _release(self.fd)
        for fd in (self.dir_fd, self.root_fd):
            try:
                os.close(fd)
            except OSError:
                pass  # the descriptor is released whatever close() says (Linux)


#: Shard descriptors that hold (or are taking) a shard's lock in this process. A child forked
#: meanwhile by another thread (multiprocessing, a DataLoader) would share each lock for as
#: long as it lives, stalling every writer of that month: the child closes its copies.
_locking: set[int] = set()


def _forget_locks_in_child() -> None:
    for fd in list(_locking):
        try:
            os.close(fd)
        except OSError:
            pass
    _locking.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


def _unlock(fd: int) -> None:
    """Release a shard descriptor's lock, keeping it open (closing would release it too)."""
    _locking.discard(fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        pass  # only EBADF/EINVAL, for a descriptor that holds no lock then


def _release(fd: int) -> None:
    """Close a shard descriptor, which releases its lock."""
    _locking.discard(fd)
    try:
        os.close(fd)
    except OSError:
        pass  # the descriptor (and its lock) is released whatever close() says (Linux)


def _append_locked(shard: _Shard, payload: bytes) -> None:
    """Write and fsync `payload` under the caller's lock."""
    path, fd = shard.path, shard.fd
    size = os.fstat(fd).st_size
    if size == 0:
        # Whoever first puts rows into a file makes its name durable first (its creator may
        # have failed or died before doing so): no row is acknowledged in a file a crash
        # could take away.
        try:
            os.fsync(shard.dir_fd)
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
        pass  # e.g. an append-only (`chattr +a`) file: the caller reports the failure anyway


def _open_locked(path: Path, lock_timeout: float | None) -> _Shard:
    """Open and lock the regular file now at `path`, even if it is renamed or deleted
    meanwhile; raise `StoreError` when that cannot be done."""
    root, directory = path.parent.parent, path.parent
    for _ in range(_REOPEN_ATTEMPTS):
        fds: list[int] = []  # closed on the way out unless handed over in a `_Shard`
        try:
            try:
                fds.append(safe_fs.open_root(root, create=True))
                fds.append(safe_fs.open_dir(fds[0], root, directory.name, create=True))
            except OSError as exc:
                message = f"cannot open directory: {exc.strerror or exc}"
                raise StoreError(path, message, exc.errno) from exc
            try:
                fds.append(safe_fs.open_file(fds[1], directory, path.name, _OPEN_FLAGS))
                _locking.add(fds[2])
                _lock(fds[2], lock_timeout)
            except FileNotFoundError:
                continue  # the directory was deleted after we opened it: open a fresh one
            except OSError as exc:
                message = f"cannot open shard: {exc.strerror or exc}"
                raise StoreError(path, message, exc.errno) from exc
            shard = _Shard(path, str(root), directory.name, *fds)
            if shard.in_log():
                fds = []
                return shard
            # Renamed away while we waited for the lock: write to the file there now.
        finally:
            for fd in reversed(fds):
                _release(fd)
    raise StoreError(path, "shard keeps being replaced while opening it", errno.ESTALE)


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


def ensure_dir(directory: Path) -> None:
    """Create the shard directory (and parents); fsync each parent that gained an entry.

    `directory`'s parent is the data dir (trusted); whatever is at `directory` that is not a
    real directory (a link, a file...) is moved aside and a fresh directory made.
    """
    with safe_fs.opened_dirs(directory.parent, (directory.name,), create=True):
        pass
