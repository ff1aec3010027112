"""Which filesystem holds the data dir: O_APPEND is only atomic on a local one."""

from __future__ import annotations

import os
from pathlib import Path

NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "ceph", "glusterfs", "lustre",
        "afs", "9p", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs", "gpfs",
    }
)  # fmt: skip


def _unescape(field: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as octal."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def filesystem_type(path: Path, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The fstype of the mount holding `path` (which need not exist yet)."""
    target = Path(os.path.realpath(path))
    best, fstype = "", None
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields, _, tail = line.partition(" - ")
                parts, rest = fields.split(), tail.split()
                if len(parts) < 5 or not rest:
                    continue
                mount_point = _unescape(parts[4])
                inside = str(target) == mount_point or str(target).startswith(
                    mount_point.rstrip("/") + "/"
                )
                if inside and len(mount_point) >= len(best):
                    best, fstype = mount_point, rest[0]
    except OSError:
        return None
    return fstype


def network_filesystem(path: Path) -> str | None:
    """The network fstype under `path`, or None when it is local (or cannot be told)."""
    fstype = filesystem_type(path)
    return fstype if fstype in NETWORK_FILESYSTEMS else None
