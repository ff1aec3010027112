"""Where the columnar cache lives: `$XDG_CACHE_HOME/mantis/stats-v1/<data dir>/`, per user.

Per user, not beside the data: a data dir is often read-only to the people who query it
(the daemon's, a copy mounted read-only) and shared by several users; a cache one user wrote
would be something every other user had to trust. In the user's own cache dir, a cache file
is only ever believed by the user who wrote it. `<data dir>` is the device and inode of its
`runs_log/` (`1b-8c2a41`): however the path is spelled, and wherever the dir is moved, one
data dir has one cache.

Trust (design.md, "Trust"): below `$XDG_CACHE_HOME` (the user's own path: its links are
followed), every directory is opened with `O_NOFOLLOW | O_DIRECTORY` relative to its parent,
made `0700` when missing, and used only when it is this user's and nobody else may write in
it; cache files are opened with `O_NOFOLLOW` and read only when they are this user's regular
files. When the user's cache dir cannot be used (no home, read-only, someone else's), or a
write into it fails (a full disk), segments go to a private temporary dir removed when the
query ends: the query answers either way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

SUBDIRS: Final = ("mantis", "stats-v1")
DIR_MODE: Final = 0o700
#: In each data dir's cache: the data dir's path, to tell when the data dir is gone.
ORIGIN: Final = "origin"
#: A data dir's cache without an `ORIGIN`, untouched this long, is removed.
ORPHAN_SECONDS: Final = 30 * 24 * 3600
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def cache_home(environ: Mapping[str, str] | None = None) -> Path | None:
    """`$XDG_CACHE_HOME`, else `~/.cache` (the XDG rule: a relative value is ignored)."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg)
    home = env.get("HOME", "")
    return Path(home) / ".cache" if os.path.isabs(home) else None


def data_dir_key(runs_log_fd: int) -> str:
    """The name of a data dir's cache: its `runs_log/`'s device and inode, in hex."""
    opened = os.fstat(runs_log_fd)
    return f"{opened.st_dev:x}-{opened.st_ino:x}"


@dataclass
class CacheDir:
    """The directory segments are read from and written to (`fd`: the user's cache dir when
    `persistent`, else the spare one), and a private temporary one for what cannot be written
    there (`spare_fd`, or -1 when there is none). `parent_fd`: the user's `stats-v1/` (-1 when
    not `persistent`), where the caches of other data dirs are."""

    fd: int
    persistent: bool
    spare_fd: int = -1
    parent_fd: int = -1

    def open_file(self, dir_fd: int, name: str) -> int | None:
        """A cache file of ours under `dir_fd` (`fd` or `spare_fd`), open for reading, or
        None (missing, a link, not a regular file, or someone else's)."""
        if dir_fd < 0:
            return None
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError:
            return None
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or opened.st_uid != os.geteuid():
            os.close(fd)
            return None
        return fd

    def names(self) -> list[str]:
        """The entries of the cache dir (empty when it cannot be listed)."""
        try:
            return os.listdir(self.fd)
        except OSError:
            return []

    def remove(self, name: str) -> None:
        """Remove a cache file (never fails: the cache is only ever an optimisation)."""
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=self.fd)

    def record_origin(self, data_dir: Path) -> None:
        """Note which data dir this cache is of (`ORIGIN`), for `remove_orphans`."""
        origin = os.fsencode(os.path.abspath(data_dir))
        with contextlib.suppress(OSError):
            if _read_small(self.fd, ORIGIN) == origin:
                return
        with contextlib.suppress(OSError):
            temp = f".{ORIGIN}.{os.getpid()}.tmp"
            fd = os.open(
                temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=self.fd
            )
            try:
                os.write(fd, origin)
            finally:
                os.close(fd)
            os.rename(temp, ORIGIN, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def remove_orphans(self, *, now: float | None = None) -> None:
        """Remove the caches of data dirs that are gone: whose recorded data dir no longer
        has the `runs_log/` they were made for, or, without a record, untouched for
        `ORPHAN_SECONDS`."""
        if self.parent_fd < 0:
            return
        now = time.time() if now is None else now
        try:
            names = os.listdir(self.parent_fd)
        except OSError:
            return
        for name in names:
            with contextlib.suppress(OSError):
                found = os.stat(name, dir_fd=self.parent_fd, follow_symlinks=False)
                if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid():
                    continue
                if _alive(self.parent_fd, name, found, now):
                    continue
                shutil.rmtree(name, dir_fd=self.parent_fd)


def _read_small(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


def _alive(parent_fd: int, name: str, found: os.stat_result, now: float) -> bool:
    """Whether the cache `name` (of `stats-v1/`) may still serve its data dir."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError:
        return True  # not ours to judge
    try:
        origin = _read_small(fd, ORIGIN)
    except OSError:
        return now - found.st_mtime < ORPHAN_SECONDS
    finally:
        os.close(fd)
    try:
        runs_log = os.stat(os.path.join(os.fsdecode(origin), "runs_log"))
    except OSError:
        return False
    return f"{runs_log.st_dev:x}-{runs_log.st_ino:x}" == name


def _own_dir(parent_fd: int, name: str) -> int:
    """Open (making it, mode 0700, when missing) the directory `name` under `parent_fd`
    without following a link; OSError unless it is ours and only we may write in it."""
    for _ in range(3):
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, DIR_MODE, dir_fd=parent_fd)
            continue
        opened = os.fstat(fd)
        if opened.st_uid != os.geteuid() or opened.st_mode & 0o022:
            os.close(fd)
            raise PermissionError(errno.EPERM, f"{name}: not this user's own directory")
        return fd
    raise FileNotFoundError(errno.ENOENT, f"{name}: keeps disappearing")


def _user_cache(runs_log_fd: int, environ: Mapping[str, str] | None) -> tuple[int, int]:
    """The user's cache dir of this data dir and its parent (`stats-v1/`), open; OSError
    when it cannot be used."""
    home = cache_home(environ)
    if home is None:
        raise FileNotFoundError(errno.ENOENT, "no cache home: neither XDG_CACHE_HOME nor HOME")
    home.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in SUBDIRS:
            inner = _own_dir(fd, name)
            os.close(fd)
            fd = inner
        mine = _own_dir(fd, data_dir_key(runs_log_fd))
    except BaseException:
        os.close(fd)
        raise
    if os.fstatvfs(mine).f_flag & os.ST_RDONLY:
        os.close(mine)
        os.close(fd)
        raise OSError(errno.EROFS, "the cache dir is on a read-only file system")
    return mine, fd


@contextlib.contextmanager
def opened_cache_dir(
    runs_log_fd: int, *, environ: Mapping[str, str] | None = None
) -> Iterator[CacheDir]:
    """The cache dir of the data dir whose `runs_log/` is open as `runs_log_fd`, with a
    private spare one; both closed (the spare one removed) on exit."""
    with contextlib.ExitStack() as stack:
        spare_fd = -1
        with contextlib.suppress(OSError):
            spare = tempfile.mkdtemp(prefix="mantis-cache-")
            stack.callback(shutil.rmtree, spare, True)
            spare_fd = os.open(spare, _DIR_FLAGS)
            stack.callback(os.close, spare_fd)
        try:
            fd, parent_fd = _user_cache(runs_log_fd, environ)
        except OSError:
            yield CacheDir(spare_fd, False, spare_fd)
            return
        stack.callback(os.close, fd)
        stack.callback(os.close, parent_fd)
        yield CacheDir(fd, True, spare_fd, parent_fd)
