"""Which data dir a row came from: a random `source_id`, written once, and a human label.

`<data_dir>/source.json` (next to `runs_log/`) holds `{"source_id": "<uuid4>", "label": "..."}`.
The shipper creates it on its first run and never rewrites it, so every copy of a pod's log
carries the same identity, and the central store can tell pods apart (design.md, "Fleet").

Written with the care of the shards (design.md, "Trust"): the file is opened relative to the
data dir's fd without following links; a new one is written to an `O_EXCL` temporary file,
fsynced, and hard-linked into place (a link never replaces an existing name, so two shippers
racing to create it agree on one winner), then the directory is fsynced.

Layer 1: stdlib + msgspec.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import socket
import stat
import uuid
from pathlib import Path
from typing import Annotated, Final

import msgspec

from mantisd.text import printable

SOURCE_FILE: Final = "source.json"
#: A label names a pod in questions and tables: short, printable.
MAX_LABEL: Final = 200
#: The file is tiny; anything longer is not ours.
_MAX_BYTES: Final = 4096
_MODE: Final = 0o660
_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_TEMP_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

Label = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LABEL)]


class SourceIdError(Exception):
    """Raised when the data dir's identity cannot be read or written; the message names the
    file and what is wrong with it. Nothing is overwritten to "repair" it."""


class SourceIdentity(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A data dir's identity: `source_id` never changes; `label` is the default pod name."""

    source_id: uuid.UUID
    label: Label


def check_label(label: str) -> str:
    """`label`, or ValueError naming what is wrong (empty, too long, control characters)."""
    if not label or len(label) > MAX_LABEL:
        raise ValueError(f"a label is 1 to {MAX_LABEL} characters, got {len(label)}")
    if not label.isprintable():
        raise ValueError(f"a label has no control characters: {label!r}")
    return label


def default_label() -> str:
    """The host (pod) name, which is what an operator calls a pod."""
    return check_label(socket.gethostname()[:MAX_LABEL] or "unnamed")


def read_source(data_dir: Path) -> SourceIdentity | None:
    """The data dir's identity, or None when it has none yet."""
    dir_fd = _open_dir(data_dir)
    try:
        return _read(dir_fd, data_dir)
    finally:
        os.close(dir_fd)


def ensure_source(data_dir: Path, *, label: str | None = None) -> SourceIdentity:
    """The data dir's identity, created (with `label`, default: the host name) if missing."""
    dir_fd = _open_dir(data_dir)
    try:
        found = _read(dir_fd, data_dir)
        if found is not None:
            return found
        fresh = SourceIdentity(uuid.uuid4(), check_label(label or default_label()))
        _write_once(dir_fd, data_dir, msgspec.json.encode(fresh) + b"\n")
        found = _read(dir_fd, data_dir)  # whoever won a race, this is the identity now
        assert found is not None
        return found
    finally:
        os.close(dir_fd)


def _open_dir(data_dir: Path) -> int:
    try:
        return os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise SourceIdError(f"cannot open data dir {data_dir}: {exc.strerror or exc}") from None


def _read(dir_fd: int, data_dir: Path) -> SourceIdentity | None:
    path = data_dir / SOURCE_FILE
    try:
        fd = os.open(SOURCE_FILE, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SourceIdError(f"{path} is a symbolic link: not followed") from None
        raise SourceIdError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SourceIdError(f"{path} is not a regular file: not read")
        data = os.read(fd, _MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_BYTES:
        raise SourceIdError(f"{path} is longer than {_MAX_BYTES} bytes: not a source id file")
    try:
        identity = msgspec.json.decode(data, type=SourceIdentity)
        check_label(identity.label)  # written by anyone who can write the data dir
        return identity
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise SourceIdError(
            f"{path} is damaged ({printable(str(exc))}); it is never rewritten: restore it from "
            "a copy of this data dir, or remove it to give the data dir a new identity"
        ) from None


def _write_once(dir_fd: int, data_dir: Path, payload: bytes) -> None:
    """Create `source.json` with `payload` unless it exists; durable when this returns."""
    temp = f".{SOURCE_FILE}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(temp, _TEMP_FLAGS, _MODE, dir_fd=dir_fd)
    except OSError as exc:
        raise SourceIdError(
            f"cannot create {data_dir / SOURCE_FILE}: {exc.strerror or exc}"
        ) from None
    try:
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, SOURCE_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            pass  # another shipper created it first: its identity stands
        os.unlink(temp, dir_fd=dir_fd)
        os.fsync(dir_fd)  # the new name (and the temporary one gone) survive a crash
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise SourceIdError(
            f"cannot write {data_dir / SOURCE_FILE}: {exc.strerror or exc}"
        ) from None
