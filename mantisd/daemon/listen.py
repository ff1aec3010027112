"""The listening socket: the one systemd passed us (`LISTEN_FDS`), or a path we bind.

A stale socket file (nobody accepts on it) is replaced; a live daemon on the path is refused,
so two daemons never split one pod's clients between them. Two daemons starting at once are
told apart by an exclusive `flock` on `<socket>.lock`, held for the daemon's life.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import logging
import os
import socket
import stat
from collections.abc import MutableMapping
from pathlib import Path

import anyio
from anyio.abc import SocketListener

logger = logging.getLogger(__name__)

#: The first file descriptor systemd passes (sd_listen_fds(3)).
SD_LISTEN_FDS_START = 3
_SD_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class ListenError(Exception):
    """Raised when the daemon cannot listen: the path is busy or unusable."""


@dataclasses.dataclass
class Bound:
    """A listener and, when we created it, the socket file to remove on exit."""

    listener: SocketListener
    path: Path | None  # where clients connect (None when unknown, e.g. an abstract socket)
    created: tuple[int, int] | None  # (st_dev, st_ino) of the socket file we bound
    lock_fd: int | None = None  # holds `<socket>.lock` while we serve on the path


def systemd_socket(environ: MutableMapping[str, str] | None = None) -> socket.socket | None:
    """The first stream socket systemd passed to *this* process, or None; clears the vars."""
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
    names = env.get("LISTEN_FDNAMES", "")
    for name in _SD_VARS:
        env.pop(name, None)  # our children must not think the fds are theirs
    if not pid or not count:
        return None
    if not pid.isdigit() or int(pid) != os.getpid():
        logger.warning("LISTEN_PID=%s is not our pid %d: ignoring LISTEN_FDS", pid, os.getpid())
        return None
    if not count.isdigit() or int(count) < 1:
        return None
    labels = names.split(":") if names else []
    candidates: list[tuple[str, socket.socket]] = []
    for index, fd in enumerate(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count))):
        label = labels[index] if index < len(labels) else "unknown"
        try:
            os.set_inheritable(fd, False)
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            logger.warning("ignoring fd %d (%s) from systemd: %s", fd, label, exc.strerror)
            continue
        if sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM:
            candidates.append((label, sock))
        else:
            logger.warning("ignoring fd %d (%s) from systemd: not a Unix stream socket", fd, label)
            sock.detach()  # leave fds we do not use alone
    # The socket named after us (FileDescriptorName=mantisd) if there is one, else the first.
    candidates.sort(key=lambda item: not item[0].startswith("mantisd"))
    chosen = candidates[0][1] if candidates else None
    for _, extra in candidates[1:]:
        extra.detach()
    if chosen is None:
        raise ListenError("systemd passed LISTEN_FDS but no Unix stream socket")
    return chosen


def _claim(path: Path) -> int:
    """Lock `<path>.lock` for as long as we serve on `path`; a second daemon is refused here,
    before it could take a starting daemon's socket for a stale one."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    owner = path.parent.stat().st_uid
    if owner not in (0, os.geteuid()):
        raise ListenError(
            f"{path.parent} belongs to uid {owner}: refusing to serve from a directory "
            "another user controls"
        )
    lock = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ListenError(f"cannot open {lock}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ListenError(f"another mantisd is already listening on {path}") from None
    return fd


def _replace_stale(path: Path) -> None:
    """Remove `path` if it is a socket nobody listens on; refuse a live daemon or a non-socket."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ListenError(f"cannot check socket {path}: {exc.strerror}") from exc
        logger.info("replacing stale socket %s", path)
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise ListenError(f"another mantisd is already listening on {path}")


async def bind(path: Path | None, *, mode: int) -> Bound:
    """Adopt systemd's socket if it passed one, else bind `path` with file mode `mode`."""
    inherited = systemd_socket()
    if inherited is not None:
        name = inherited.getsockname()
        where = Path(name) if isinstance(name, str) and name else None
        return Bound(await SocketListener.from_socket(inherited), where, None)
    if path is None:
        raise ListenError("no socket path given and no socket passed by systemd")
    lock_fd = _claim(path)
    try:
        _replace_stale(path)
        listener = await anyio.create_unix_listener(path, mode=mode)
    except OSError as exc:
        os.close(lock_fd)
        raise ListenError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    except BaseException:
        os.close(lock_fd)
        raise
    return Bound(listener, path, _identity(path), lock_fd)


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def remove_socket_file(bound: Bound) -> None:
    """Remove the socket file if it is still the one we created (never another daemon's),
    then let go of the path's lock."""
    try:
        _remove_own_socket_file(bound)
    finally:
        if bound.lock_fd is not None:
            os.close(bound.lock_fd)
            bound.lock_fd = None


def _remove_own_socket_file(bound: Bound) -> None:
    if bound.path is None or bound.created is None:
        return
    try:
        st = bound.path.lstat()
        if (st.st_dev, st.st_ino) == bound.created:
            bound.path.unlink()
    except OSError:
        pass
