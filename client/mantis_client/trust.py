"""Whom the client hands rows to (design.md, "Trust"): checks made before a row is sent.

A daemon socket is trusted when

- its directory is a real directory (not a symbolic link) owned by root, by us or by the
  expected uid, and not writable by others (mode bit `o+w`, sticky or not: in such a
  directory, `/tmp` itself included, anyone may have made the socket first);
- the path in it is a socket (not a link to one);
- the process that listens on it (`SO_PEERCRED`: whoever called `listen()`, which for the
  packaged socket unit is pid 1) is root, us, or the expected uid.

Group write on the directory is allowed: a group member who replaces the socket still fails
the listener check, so the worst it can do is make the client write its rows directly.

The expected uid is the `expect_uid=` argument, else `$MANTIS_DAEMON_UID` (a number): for a
daemon run as its own user in its own directory. A value of the variable that is not a uid is
ignored, and the reason a socket is refused then names it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: `(uid_t) -1` means "no uid" to the kernel: never a real owner.
_NO_UID = 2**32 - 1

ENV_VAR = "MANTIS_DAEMON_UID"


class UntrustedSocket(Exception):
    """Raised when a socket fails a trust check: the row must not be sent there."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"untrusted socket {path}: {reason}")


@dataclass(frozen=True, slots=True)
class TrustedUids:
    """The uids that may own the socket's directory and listen on it."""

    own: int
    expected: int | None = None
    #: Why `$MANTIS_DAEMON_UID` was ignored, for the refusal's message ("" when it was not).
    ignored: str = ""

    @classmethod
    def resolve(
        cls, expect_uid: int | None = None, *, environ: Mapping[str, str] | None = None
    ) -> TrustedUids:
        """Root, our effective uid (what `SO_PEERCRED` reports), and the expected uid.

        A bad `expect_uid` is the caller's bug: `ValueError`. A bad `$MANTIS_DAEMON_UID` is
        ignored (so a typo in a pod's environment never costs a row) and named later.
        """
        own = os.geteuid()
        if expect_uid is not None:
            if isinstance(expect_uid, bool) or not isinstance(expect_uid, int):
                raise ValueError(f"expect_uid: expected a uid (an int), got {expect_uid!r}")
            if not 0 <= expect_uid < _NO_UID:
                raise ValueError(f"expect_uid: expected a uid, got {expect_uid}")
            return cls(own, expect_uid)
        raw = (os.environ if environ is None else environ).get(ENV_VAR, "").strip()
        if not raw:
            return cls(own)
        if raw.isascii() and raw.isdigit() and int(raw) < _NO_UID:
            return cls(own, int(raw))
        return cls(own, ignored=f"{ENV_VAR}={raw!r} ignored: not a numeric uid")

    def __contains__(self, uid: object) -> bool:
        return uid in (0, self.own, self.expected)

    def described(self) -> str:
        expected = (
            "an expected uid" if self.expected is None else f"the expected uid {self.expected}"
        )
        text = f"root, us (uid {self.own}) or {expected}"
        return f"{text} ({self.ignored})" if self.ignored else text


def check_socket_path(path: Path, trusted: TrustedUids) -> None:
    """`UntrustedSocket` unless `path` is a socket in a directory only trusted users control.

    `OSError` (e.g. no such directory or socket) means no daemon there at all.
    """
    directory = path.parent
    # lstat: a symbolic link as the directory is judged as itself, never followed.
    dir_stat = os.lstat(directory)
    if stat.S_ISLNK(dir_stat.st_mode):
        raise UntrustedSocket(path, f"{directory} is a symbolic link")
    if not stat.S_ISDIR(dir_stat.st_mode):
        raise UntrustedSocket(path, f"{directory} is not a directory")
    if dir_stat.st_uid not in trusted:
        raise UntrustedSocket(
            path,
            f"directory {directory} belongs to uid {dir_stat.st_uid}, not to {trusted.described()}",
        )
    if dir_stat.st_mode & stat.S_IWOTH:
        mode = stat.S_IMODE(dir_stat.st_mode)
        raise UntrustedSocket(path, f"directory {directory} is writable by others (mode {mode:o})")
    socket_stat = os.lstat(path)
    if not stat.S_ISSOCK(socket_stat.st_mode):
        raise UntrustedSocket(path, f"not a socket ({_kind(socket_stat.st_mode)})")


def check_listener(uid: int, path: Path, trusted: TrustedUids) -> None:
    """`UntrustedSocket` unless the listener's uid (`SO_PEERCRED`) is a trusted one."""
    if uid not in trusted:
        raise UntrustedSocket(path, f"listener uid {uid} is not {trusted.described()}")


def _kind(mode: int) -> str:
    kinds = [
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISFIFO, "a FIFO"),
    ]
    return next((name for test, name in kinds if test(mode)), "a device")
