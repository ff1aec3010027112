"""What a process holds open, read from `/proc` (the daemon's writer keeps shards open)."""

from __future__ import annotations

import os
from pathlib import Path


def fds_on(pid: int, path: Path) -> list[str]:
    """Process `pid`'s descriptors open on `path` (or on its inode once unlinked): the
    targets `/proc` shows, `path` itself or `path (deleted)`."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.removesuffix(" (deleted)") == str(path):
            found.append(target)
    return found
