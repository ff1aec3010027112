"""What processes hold, read from `/proc`: open files (the daemon's writer keeps shards open)
and flock waits (a writer or an archiver blocked on a shard's lock)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
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


def wait_for_flock_waiter(inode: int, alive: Callable[[], bool], timeout: float = 30) -> None:
    """Block until `/proc/locks` shows someone waiting for an flock on `inode`; `alive()`
    False (the waiter died) fails at once."""
    deadline = time.monotonic() + timeout
    pattern = re.compile(rf"-> FLOCK .*:{inode} ")
    while not pattern.search(Path("/proc/locks").read_text()):
        assert alive(), "the waiter is gone"
        assert time.monotonic() < deadline, "nobody waited for the lock"
        time.sleep(0.01)


#: Python for a child: lower RLIMIT_AS to what the interpreter already maps (its imports done
#: above this) plus `sys.argv[2]` bytes, so that only the work that follows is bounded.
LIMIT_ADDRESS_SPACE = """
import resource
with open("/proc/self/status") as f:
    used = next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmSize:"))
limit = used + int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
"""


def run_limited(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter with `args` (the second one its memory allowance)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
    )
