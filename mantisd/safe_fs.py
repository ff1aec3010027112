"""Opening what lies inside the data dir without trusting it (design.md, "Trust").

A root daemon often serves a data dir that a group can write: any name in it may be replaced
by a link, a FIFO, a directory or a device at any moment. So below the data dir (the
operator's path, whose links are followed), every directory is opened relative to its
parent's fd with `O_DIRECTORY | O_NOFOLLOW`, every file relative to its directory's fd with
`O_NOFOLLOW | O_NONBLOCK` (never block on a FIFO), and checked with `fstat`: only regular
files and real directories are used. Writers move anything else aside (a rename within the
directory, which never follows a link), log it at error level, count it, and create a fresh
entry; readers refuse or skip it.

Layer 1: stdlib only.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

FILE_MODE: Final = 0o660
DIR_MODE: Final = 0o770
#: Marks a moved-aside entry; never matches a shard name, so readers ignore it.
ASIDE_TAG: Final = ".unsafe-"

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_FILE_FLAGS: Final = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
#: Readers only need to look up names in the data dir: no read permission on it required.
_LOOKUP_ONLY: Final = getattr(os, "O_PATH", os.O_RDONLY)
#: What opening a file for writing fails with when the entry is not a regular file.
_ODD_ENTRY_ERRORS: Final = frozenset({errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENODEV})
#: How long moving an entry aside waits for its directory's lock.
_LOCK_TIMEOUT: Final = 5.0
#: Tries before giving up on an entry that keeps being replaced while we open it.
_ATTEMPTS: Final = 8

_moved_lock = threading.Lock()
_moved_aside = 0


class UnsafeEntryError(OSError):
    """Raised to a reader when an entry is not what it must be (a link, a FIFO, a file where
    a directory belongs...): readers never follow nor move anything."""


def moved_aside_count() -> int:
    """Entries this process moved aside since it started (the daemon's status shows it)."""
    return _moved_aside


def describe(mode: int) -> str:
    """What kind of file `mode` is, in words for a log line."""
    kinds = [
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISREG, "regular file"),
    ]
    return next((name for check, name in kinds if check(mode)), "file of unknown type")


def move_aside(dir_fd: int, dir_path: Path, name: str, found: os.stat_result) -> None:
    """Rename the entry `found` at `name` (never followed) to a name readers ignore; log it
    at error level and count it.

    Under the directory's `flock`, and only if `found` is still what is there: two writers
    that met the same link must not both move something aside, or the second would move the
    fresh shard the first has just written to. The caller then looks at `name` again.
    """
    kind = describe(found.st_mode)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = f"{name}{ASIDE_TAG}{stamp}-{secrets.token_hex(4)}"
    with _locked(dir_fd, dir_path / name, kind):
        now = _found_at(dir_fd, name)
        if now is None or (now.st_dev, now.st_ino) != (found.st_dev, found.st_ino):
            return  # moved or replaced meanwhile
        try:
            os.rename(name, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            message = f"{dir_path / name} is a {kind}, not used, and cannot be moved aside"
            raise OSError(exc.errno, f"{message}: {exc.strerror}") from exc
    global _moved_aside
    with _moved_lock:
        _moved_aside += 1
    logger.error(
        "%s was a %s (not followed, not written): moved aside to %s; a fresh one is used",
        dir_path / name,
        kind,
        aside,
    )


@contextmanager
def _locked(dir_fd: int, path: Path, kind: str) -> Iterator[None]:
    """Hold the directory's `flock` (a bounded wait: anyone who can read it can hold it)."""
    deadline = time.monotonic() + _LOCK_TIMEOUT
    while True:
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                message = f"{path} is a {kind}, not used, and its directory stays locked"
                raise OSError(errno.ETIMEDOUT, message) from None
            time.sleep(0.01)
    try:
        yield
    finally:
        fcntl.flock(dir_fd, fcntl.LOCK_UN)


def _found_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"not a single path component: {name!r}")


def open_root(path: Path, *, create: bool) -> int:
    """Open the data dir itself (the operator's path: links in it are followed).

    With `create` (writers), a missing one is made with its parents, each parent that gained
    an entry fsynced so that the new names survive a crash, and the fd can be fsynced.
    """
    flags = (os.O_RDONLY if create else _LOOKUP_ONLY) | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        if not create:
            raise
    missing = []
    for d in (path, *path.parents):
        if d.exists():
            break
        missing.append(d)
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    for d in reversed(missing):
        fd = os.open(d.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return os.open(path, flags)


def open_dir(parent_fd: int, parent_path: Path, name: str, *, create: bool) -> int:
    """Open directory `name` under `parent_fd` without following a link.

    Writers (`create`): a missing one is made (mode `DIR_MODE`, parent fsynced); anything
    else in its place is moved aside first. Readers: FileNotFoundError, or UnsafeEntryError.
    """
    _check_name(name)
    for _ in range(_ATTEMPTS):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(name, DIR_MODE, dir_fd=parent_fd)
            except FileExistsError:
                continue  # made by someone else meanwhile, or a dangling link: look again
            os.fsync(parent_fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            found = _found_at(parent_fd, name)
            if found is None or stat.S_ISDIR(found.st_mode):
                continue  # replaced again meanwhile: look again
            if not create:
                kind = describe(found.st_mode)
                raise UnsafeEntryError(
                    exc.errno, f"a {kind}, not a directory: not used", str(parent_path / name)
                ) from None
            move_aside(parent_fd, parent_path, name, found)
            # The fresh directory is made on the next turn; the rename is made durable with it.
    raise OSError(errno.ESTALE, f"{parent_path / name} keeps being replaced while opening it")


def open_file(dir_fd: int, dir_path: Path, name: str, flags: int, mode: int = FILE_MODE) -> int:
    """Open (creating it if missing) the regular file `name` under `dir_fd` for writing.

    Never follows a link and never blocks on a FIFO; whatever is found in its place that is
    not a regular file is moved aside and a fresh file created. `flags`: the access mode and
    e.g. `O_APPEND`. FileNotFoundError means the directory itself was deleted meanwhile.
    """
    _check_name(name)
    for _ in range(_ATTEMPTS):
        try:
            fd = os.open(name, flags | os.O_CREAT | _FILE_FLAGS, mode, dir_fd=dir_fd)
        except FileNotFoundError:
            raise
        except OSError as exc:
            # ELOOP (a link), EISDIR, ENXIO (a FIFO without reader, a socket)... but also
            # EACCES on a real file: only what is really not a regular file is moved.
            found = _found_at(dir_fd, name)
            if found is not None and not stat.S_ISREG(found.st_mode):
                move_aside(dir_fd, dir_path, name, found)
                continue
            if exc.errno in _ODD_ENTRY_ERRORS:
                continue  # what refused us is gone already (another writer moved it aside)
            raise
        opened = os.fstat(fd)
        if stat.S_ISREG(opened.st_mode):
            return fd
        os.close(fd)  # e.g. a FIFO opened read-write: never written
        move_aside(dir_fd, dir_path, name, opened)
    raise OSError(errno.ESTALE, f"{dir_path / name} keeps being replaced while opening it")


def open_file_for_reading(dir_fd: int | None, path: Path) -> int:
    """Open a regular file read-only: not through a link, never blocking on a FIFO.

    Relative to `dir_fd` (by `path.name`) when given, else by `path` (its directories are
    then the caller's to trust). Raises UnsafeEntryError for anything but a regular file.
    """
    if dir_fd is None:
        target: str | Path = path
    else:
        _check_name(path.name)
        target = path.name
    try:
        fd = os.open(target, os.O_RDONLY | _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise UnsafeEntryError(exc.errno, "a symbolic link: not followed", str(path)) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UnsafeEntryError(
            errno.EINVAL, f"a {describe(mode)}, not a regular file: not read", str(path)
        )
    return fd


def create_new(dir_fd: int, name: str, mode: int = FILE_MODE) -> int:
    """Create the regular file `name` under `dir_fd` for writing; FileExistsError when any
    entry (a link included: `O_EXCL` never follows one) is already there. For temporary
    files that are renamed into place once complete."""
    _check_name(name)
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE_FLAGS, mode, dir_fd=dir_fd)


Identity = tuple[int, int]


def identity(fd: int) -> Identity:
    """What tells an open file from any other: its device and inode."""
    opened = os.fstat(fd)
    return opened.st_dev, opened.st_ino


def still_at(dir_fd: int, name: str, opened: Identity) -> bool:
    """True while the file `opened` is the entry `name` under `dir_fd` (not renamed, not
    deleted, not replaced)."""
    current = _found_at(dir_fd, name)
    return current is not None and (current.st_dev, current.st_ino) == opened


def root_still_at(path: str | Path, opened: Identity) -> bool:
    """True while the data dir `path` still resolves to the directory `opened`."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    return (current.st_dev, current.st_ino) == opened


@contextmanager
def opened_dirs(root: Path, names: tuple[str, ...], *, create: bool) -> Iterator[list[int]]:
    """The fds of `root` and of each directory of `names` below it, closed on exit."""
    with ExitStack() as stack:
        fds = [open_root(root, create=create)]
        stack.callback(os.close, fds[0])
        path = root
        for name in names:
            fd = open_dir(fds[-1], path, name, create=create)
            stack.callback(os.close, fd)
            fds.append(fd)
            path = path / name
        yield fds
