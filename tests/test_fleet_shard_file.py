"""The shipper's forward reader: complete lines only, bounded lines, no links, stable sizes."""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mantisd.fleet.shard_file import (
    FINGERPRINT_BYTES,
    KEEP_BYTES,
    fingerprint,
    open_log_dir,
    open_shard,
    read_chunk,
    shard_names,
    stable_size,
)
from mantisd.safe_fs import UnsafeEntryError


def shard(data_dir: Path, content: bytes, name: str = "2026-10.jsonl") -> Path:
    path = data_dir / "runs_log" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return path


def chunk_of(path: Path, start: int = 0, *, max_bytes: int = 1 << 20, max_lines: int = 10**6):  # type: ignore[no-untyped-def]
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_chunk(fd, start, os.fstat(fd).st_size, max_bytes=max_bytes, max_lines=max_lines)
    finally:
        os.close(fd)


def test_only_complete_lines_are_read_and_a_partial_tail_is_left(data_dir: Path) -> None:
    path = shard(data_dir, b'{"a":1}\n\n{"b":2}\n{"c":')
    chunk = chunk_of(path)
    assert chunk.lines == [b'{"a":1}', b"", b'{"b":2}']
    assert chunk.end == len(b'{"a":1}\n\n{"b":2}\n')
    assert chunk.offsets() == [0, 8, 9]
    assert chunk_of(path, chunk.end).lines == []  # the torn tail is never consumed
    with open(path, "ab") as f:
        f.write(b"3}\n")  # ... until its writer completes it
    later = chunk_of(path, chunk.end)
    assert (later.lines, later.start, later.end) == ([b'{"c":3}'], chunk.end, path.stat().st_size)


def test_batches_stop_at_the_line_and_byte_limits(data_dir: Path) -> None:
    path = shard(data_dir, b"".join(b"line%d\n" % i for i in range(10)))
    first = chunk_of(path, max_lines=4)
    assert first.lines == [b"line0", b"line1", b"line2", b"line3"] and first.end == 24
    second = chunk_of(path, first.end, max_bytes=13)  # 13 bytes: two lines and a part
    assert second.lines == [b"line4", b"line5"] and second.end == 36


def test_a_line_longer_than_a_batch_is_kept_in_part_and_skipped(data_dir: Path) -> None:
    huge = b"x" * (3 * KEEP_BYTES)
    path = shard(data_dir, huge + b"\n" + b'{"after":1}\n')
    chunk = chunk_of(path, max_bytes=KEEP_BYTES * 2)
    assert chunk.oversized == len(huge) and chunk.lines == [huge[:KEEP_BYTES]]
    assert chunk.end == len(huge) + 1
    assert chunk_of(path, chunk.end).lines == [b'{"after":1}']
    unfinished = shard(data_dir, huge, name="2026-11.jsonl")
    assert chunk_of(unfinished, max_bytes=KEEP_BYTES).lines == []  # not complete yet


def test_fingerprint_is_the_first_complete_line(data_dir: Path) -> None:
    path = shard(data_dir, b'{"first":')
    fd = os.open(path, os.O_RDONLY)
    try:
        assert fingerprint(fd, path.stat().st_size) is None
        with open(path, "ab") as f:
            f.write(b"1}\n" + b'{"second":2}\n')
        mark = fingerprint(fd, path.stat().st_size)
        assert mark == hashlib.sha256(b'{"first":1}\n').digest()
    finally:
        os.close(fd)
    long_first = shard(data_dir, b"y" * (FINGERPRINT_BYTES * 2) + b"\n", name="2026-09.jsonl")
    fd = os.open(long_first, os.O_RDONLY)
    try:
        assert (
            fingerprint(fd, FINGERPRINT_BYTES * 2)
            == hashlib.sha256(b"y" * FINGERPRINT_BYTES).digest()
        )
    finally:
        os.close(fd)


def test_shard_names_are_month_shards_oldest_first(data_dir: Path) -> None:
    for name in [
        "2026-10.jsonl",
        "2025-12.jsonl",
        "2026-13.jsonl",
        "notes.jsonl",
        "2026-10.jsonl.unsafe-20261001T000000Z-abcd",
        "2026-01.jsonl.gz",
    ]:
        shard(data_dir, b"", name=name)
    log_fd = open_log_dir(data_dir)
    assert log_fd is not None
    try:
        assert shard_names(log_fd) == ["2025-12.jsonl", "2026-10.jsonl"]
    finally:
        os.close(log_fd)


def test_no_log_dir_yet_is_nothing_to_read(data_dir: Path) -> None:
    assert open_log_dir(data_dir) is None


def test_a_linked_runs_log_is_refused(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (data_dir / "runs_log").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeEntryError):
        open_log_dir(data_dir)


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_shard_that_is_not_a_regular_file_is_refused(
    data_dir: Path, tmp_path: Path, kind: str
) -> None:
    (data_dir / "runs_log").mkdir()
    entry = data_dir / "runs_log" / "2026-10.jsonl"
    if kind == "symlink":
        secret = tmp_path / "secret.jsonl"
        secret.write_bytes(b'{"not":"yours"}\n')
        entry.symlink_to(secret)
    else:
        os.mkfifo(entry)  # opening it for reading must not block
    log_fd = open_log_dir(data_dir)
    assert log_fd is not None
    try:
        with pytest.raises(UnsafeEntryError):
            open_shard(log_fd, data_dir / "runs_log", "2026-10.jsonl")
    finally:
        os.close(log_fd)


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_APPEND)
fcntl.flock(fd, fcntl.LOCK_EX)
size = os.fstat(fd).st_size
os.write(fd, b'{"half a row')       # a writer mid-append ...
print("locked", flush=True)
sys.stdin.readline()
time.sleep(0.2)
os.ftruncate(fd, size)              # ... whose fsync failed: rolled back under the lock
fcntl.flock(fd, fcntl.LOCK_UN)
"""


def test_stable_size_waits_for_a_writer_mid_append(data_dir: Path) -> None:
    path = shard(data_dir, b'{"a":1}\n')
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "locked\n"
        fd = os.open(path, os.O_RDONLY)
        try:
            assert os.fstat(fd).st_size > 8  # the half-written bytes are there to be seen ...
            holder.stdin.write("go\n")
            holder.stdin.flush()
            assert stable_size(fd) == 8  # ... but the size is taken once the writer is done
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # and no lock is left held
        finally:
            os.close(fd)
        assert holder.wait(10) == 0
