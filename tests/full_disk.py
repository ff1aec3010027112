"""A shard on a full disk: a real ENOSPC for one file, where a test once used a /dev/full link.

The store no longer writes through links (design.md, "Trust"): a link to /dev/full in a
shard's place is moved aside, and the rows go to a fresh file. So a shard that really fails
with ENOSPC is a regular file bind-mounted from a tmpfs that is full (needs root, as in CI).

    with shard_on_a_full_disk(shard) as free:
        ...  # every write to `shard` fails with ENOSPC
        free()  # `shard` is an ordinary empty file again
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(*args: str | Path) -> None:
    done = subprocess.run(["mount", *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")  # a failure under CI=true


def _unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


@contextmanager
def mounted_tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs at `path` (made if missing), e.g. `size=64k,mode=0755`: a disk that really
    fills up, or with `ro` one nobody may write, root included (needs root, as in CI)."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", options, "tmpfs", path)
    try:
        yield path
    finally:
        _unmount(path)


def fill(directory: Path) -> None:
    """Fill the file system of `directory` up (ENOSPC from now on)."""
    with open(directory / "ballast", "wb", buffering=0) as ballast:
        with contextlib.suppress(OSError):
            while True:
                ballast.write(b"\0" * 4096)


@contextmanager
def shard_on_a_full_disk(path: Path) -> Iterator[Callable[[], None]]:
    """Make `path` (created empty if missing) a file whose every write fails with ENOSPC;
    yields a function that undoes it early."""
    with tempfile.TemporaryDirectory(prefix="mantis-full-") as tmp:
        tmpfs = Path(tmp)
        _mount("-t", "tmpfs", "-o", "size=4k,mode=0700", "tmpfs", tmpfs)
        mounted = [tmpfs]
        try:
            full = tmpfs / "full"
            full.touch()
            fill(tmpfs)  # `full` has no page and can get none
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            _mount("--bind", full, path)
            mounted.append(path)

            def free() -> None:
                if path in mounted:
                    mounted.remove(path)
                    _unmount(path)

            yield free
        finally:
            for point in reversed(mounted):
                _unmount(point)
