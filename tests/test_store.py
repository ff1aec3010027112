"""The shard store (`mantisd.store`), failure paths made real: processes, limits, devices.

Faults are injected into child processes (RLIMIT_FSIZE, `strace -e inject=fsync`, another uid)
so that the test process itself is never limited, traced or demoted.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mantisd.paths import list_shards, shard_path
from mantisd.reader import Scanner, ScanReport, StatRow
from mantisd.schema import ValidRow, validate
from mantisd.store import OpenShards, StoreError, append, append_rows, group_by_shard
from tests.full_disk import mounted_tmpfs, shard_on_a_full_disk
from tests.proc import fds_on, wait_for_flock_waiter
from tests.rows import make_row

JAN = "2026-01"

#: Appends each payload argument to the path argument; prints one outcome per payload.
CHILD_APPEND = """
import json, sys
from pathlib import Path
from mantisd.store import StoreError, append
outcomes = []
for payload in sys.argv[2:]:
    try:
        append(Path(sys.argv[1]), payload.encode())
    except StoreError as exc:
        outcomes.append({"error": str(exc), "errno": exc.errno})
    else:
        outcomes.append({"ok": True})
print(json.dumps(outcomes))
"""

#: The same after lowering RLIMIT_FSIZE (Python ignores SIGXFSZ, so writes fail with EFBIG).
CHILD_APPEND_LIMITED = "import resource, sys\n" + CHILD_APPEND.replace(
    "outcomes = []",
    "limit = int(sys.argv.pop(1))\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
    "outcomes = []",
)

#: One of several concurrent writers: waits for a start signal, then appends its rows.
CHILD_WRITER = """
import json, sys, time
from pathlib import Path
from mantisd.schema import validate
from mantisd.store import append_rows
data_dir, start, name, count = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
template = json.loads(sys.argv[5])
rows = []
for i in range(count):
    row = dict(template, run_id=f"{name}-{i:05d}")
    if i % 7 == 0:
        row["padding"] = name * 5000  # far beyond PIPE_BUF: only the flock keeps it whole
    rows.append(validate(row))
(start.parent / f"ready-{name}").touch()
while not start.exists():
    time.sleep(0.001)
i = 0
while i < count:
    batch = rows[i : i + 1 + i % 4]  # batches of 1 to 4 rows, one write() each
    append_rows(data_dir, batch)
    i += len(batch)
"""


def row_line(month: str = JAN, day: int = 15, **overrides: Any) -> bytes:
    """The stored line of a valid row that finished in `month`."""
    times = {
        "created_at": f"{month}-{day:02d}T11:55:00Z",
        "finished_at": f"{month}-{day:02d}T12:00:00Z",
    }
    return validate(make_row(**(times | overrides))).line


def valid_row(finished_at: str) -> ValidRow:
    return validate(make_row(created_at="2025-01-01T00:00:00Z", finished_at=finished_at))


def stored_run_ids(path: Path) -> list[str]:
    """Run ids of a shard that must hold only whole, valid, `\\n`-terminated lines."""
    content = path.read_bytes()
    assert content.endswith(b"\n"), "the shard ends with a whole line"
    return [validate(line).run_id for line in content.split(b"\n")[:-1]]


def run_child(
    code: str, *args: object, prefix: Sequence[str] = (), timeout: float = 60
) -> list[dict[str, Any]]:
    """Run `code` in a fresh interpreter; it must exit 0 (no exception but `StoreError`)."""
    proc = subprocess.run(
        [*prefix, sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    outcomes: list[dict[str, Any]] = json.loads(proc.stdout.splitlines()[-1])
    return outcomes


# --- the happy path and the layout -----------------------------------------------------------


def test_append_creates_the_directories_and_the_shard(data_dir: Path) -> None:
    shard = shard_path(data_dir / "fresh" / "deeper", JAN)
    first, second = row_line(), row_line()
    append(shard, first)
    append(shard, second)
    assert shard.read_bytes() == first + second
    assert not shard.stat().st_mode & 0o007, "shards are not world-readable"


@pytest.mark.parametrize("payload", [b"", b'{"a":1}', b'{"a":1}\n{"b":2}'])
def test_only_whole_lines_are_appended(data_dir: Path, payload: bytes) -> None:
    with pytest.raises(ValueError, match="whole lines"):
        append(shard_path(data_dir, JAN), payload)
    assert not shard_path(data_dir, JAN).exists()


def test_rows_go_to_the_shard_of_their_utc_month(data_dir: Path) -> None:
    rows = [
        valid_row("2026-02-01T00:00:00Z"),  # first second of February
        valid_row("2026-01-31T23:59:59Z"),  # last second of January
        valid_row("2026-03-01T01:30:00+02:00"),  # March locally, 2026-02-28T23:30Z in UTC
        valid_row("2026-01-01T00:59:59+01:00"),  # January locally, 2025-12-31T23:59:59Z in UTC
        valid_row("2026-01-31T23:59:59.999999Z"),
    ]
    groups = group_by_shard(data_dir, rows)
    assert groups == {
        shard_path(data_dir, "2026-02"): [rows[0].line, rows[2].line],
        shard_path(data_dir, "2026-01"): [rows[1].line, rows[4].line],
        shard_path(data_dir, "2025-12"): [rows[3].line],
    }
    append_rows(data_dir, rows)
    assert [month for month, _ in list_shards(data_dir)] == ["2026-02", "2026-01", "2025-12"]
    for path, lines in groups.items():
        assert path.read_bytes() == b"".join(lines), "arrival order is kept inside a shard"


def test_append_rows_with_nothing_writes_nothing(data_dir: Path) -> None:
    append_rows(data_dir, [])
    assert not (data_dir / "runs_log").exists()


# --- torn tails --------------------------------------------------------------------------------


@pytest.mark.parametrize("before", [b"", b"whole"], ids=["only-a-torn-line", "after-a-row"])
def test_a_torn_tail_is_terminated_before_new_rows(data_dir: Path, before: bytes) -> None:
    shard = shard_path(data_dir, JAN)
    shard.parent.mkdir(parents=True)
    kept = row_line() if before else b""
    torn = row_line()[:57]  # a crash in the middle of a write
    shard.write_bytes(kept + torn)
    new = row_line()
    append(shard, new)
    assert shard.read_bytes() == kept + torn + b"\n" + new
    report = ScanReport()
    rows = list(Scanner(StatRow).scan(data_dir, report))
    expected = [validate(new).run_id] + ([validate(kept).run_id] if kept else [])
    assert [r.run_id for r in rows] == expected
    assert report.bad_lines == 1, "the torn line stays, on its own line, and is skipped"
    append(shard, row_line())  # a tail that ends in `\n` gets no extra blank line
    assert b"\n\n" not in shard.read_bytes()


# --- concurrent writers ------------------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_appenders_leave_whole_lines_and_every_row_once(
    data_dir: Path, tmp_path: Path
) -> None:
    writers, per_writer = 4, 1000
    start = tmp_path / "start"
    template = make_row(created_at="2026-01-15T11:00:00Z", finished_at="2026-01-15T12:00:00Z")
    args = [str(data_dir), str(start)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD_WRITER, *args, f"w{n}", str(per_writer)]
            + [json.dumps(template)]
        )
        for n in range(writers)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("ready-*"))) < writers:
            assert all(p.poll() is None for p in procs), "a writer died before starting"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        start.touch()  # all writers start together
        assert [p.wait(timeout=100) for p in procs] == [0] * writers
    finally:
        for p in procs:
            p.kill()
            p.wait()
    run_ids = stored_run_ids(shard_path(data_dir, JAN))
    assert len(run_ids) == writers * per_writer
    assert set(collections.Counter(run_ids).values()) == {1}, "every row exactly once"
    for n in range(writers):
        mine = [r for r in run_ids if r.startswith(f"w{n}-")]
        assert mine == sorted(mine), "one writer's rows stay in its order"
        assert len(mine) == per_writer


# --- shards moved away -------------------------------------------------------------------------


Appender = Callable[[Path, bytes], None]


@pytest.fixture(params=["append", "held open"])
def appender(request: pytest.FixtureRequest) -> Iterator[Appender]:
    """`store.append`, and `OpenShards.append` (the daemon's), which keeps the shard open
    between appends: whatever happens to the file meanwhile, both must behave alike."""
    if request.param == "append":
        yield append
        return
    shards = OpenShards()
    yield shards.append
    shards.close()


def test_a_shard_renamed_between_appends_gets_a_fresh_file(
    data_dir: Path, appender: Appender
) -> None:
    shard = shard_path(data_dir, JAN)
    old, new = row_line(), row_line()
    appender(shard, old)
    archived = shard.with_name("2026-01.jsonl.archived")
    shard.rename(archived)
    appender(shard, new)
    assert archived.read_bytes() == old
    assert shard.read_bytes() == new


def test_a_shard_deleted_between_appends_gets_a_fresh_file(
    data_dir: Path, appender: Appender
) -> None:
    shard = shard_path(data_dir, JAN)
    old, new = row_line(), row_line()
    appender(shard, old)
    keeper = os.open(shard, os.O_RDONLY)  # keeps the unlinked inode readable
    try:
        shard.unlink()
        appender(shard, new)
        assert os.fstat(keeper).st_size == len(old)
        assert os.pread(keeper, 4096, 0) == old
    finally:
        os.close(keeper)
    assert shard.read_bytes() == new


@pytest.mark.parametrize("move", ["rename", "unlink", "rename-and-recreate"])
def test_a_shard_moved_while_a_writer_waits_for_the_lock(data_dir: Path, move: str) -> None:
    """The writer opened the old file before it was moved: it must notice and reopen.

    With `rename-and-recreate` another writer has already started the new file by the time
    the lock is free, so only comparing inodes can tell the two files apart.
    """
    shard = shard_path(data_dir, JAN)
    old, new, other = row_line(), row_line(), row_line()
    append(shard, old)
    archived = shard.with_name("archived.jsonl")
    keeper = os.open(shard, os.O_RDONLY)
    fcntl.flock(keeper, fcntl.LOCK_EX)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_APPEND, shard, new.decode()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_flock_waiter(os.fstat(keeper).st_ino, lambda: child.poll() is None)
        if move == "unlink":
            shard.unlink()
        else:
            shard.rename(archived)
        if move == "rename-and-recreate":
            append(shard, other)
        fcntl.flock(keeper, fcntl.LOCK_UN)
        out, err = child.communicate(timeout=30)
        assert child.returncode == 0, err
        assert json.loads(out) == [{"ok": True}]
        assert os.fstat(keeper).st_size == len(old), "nothing went into the moved file"
        assert os.pread(keeper, 4096, 0) == old
    finally:
        os.close(keeper)
        if child.poll() is None:
            child.kill()
            child.wait()
    assert shard.read_bytes() == (other + new if move == "rename-and-recreate" else new)
    if move != "unlink":
        assert archived.read_bytes() == old


# --- short writes and full disks ---------------------------------------------------------------


def test_a_short_write_past_rlimit_fsize_is_rolled_back(data_dir: Path) -> None:
    shard = shard_path(data_dir, JAN)
    earlier = [row_line() for _ in range(3)]
    append(shard, b"".join(earlier))
    size = shard.stat().st_size
    fits, crosses = row_line(), row_line() * 3
    limit = size + len(fits) + len(crosses) // 2
    outcomes = run_child(CHILD_APPEND_LIMITED, limit, shard, fits.decode(), crosses.decode())
    assert outcomes[0] == {"ok": True}
    assert outcomes[1]["errno"] == errno.EFBIG
    assert "short write" in outcomes[1]["error"] and "rolled back" in outcomes[1]["error"]
    assert shard.read_bytes() == b"".join(earlier) + fits, "rolled back to the previous size"


def test_a_write_beyond_rlimit_fsize_fails_cleanly(data_dir: Path) -> None:
    shard = shard_path(data_dir, JAN)
    earlier = row_line() + row_line()
    append(shard, earlier)
    outcomes = run_child(CHILD_APPEND_LIMITED, len(earlier) - 1, shard, row_line().decode())
    assert outcomes[0]["errno"] == errno.EFBIG
    assert shard.read_bytes() == earlier


def test_a_shard_on_a_full_disk_raises_store_error_enospc(data_dir: Path) -> None:
    shard = shard_path(data_dir, JAN)
    with shard_on_a_full_disk(shard) as free:
        with pytest.raises(StoreError) as caught:
            append(shard, row_line())
        assert caught.value.errno == errno.ENOSPC
        assert caught.value.path == shard
        assert "No space left on device" in str(caught.value)
        with pytest.raises(StoreError) as caught:
            append_rows(data_dir, [validate(row_line())])
        assert caught.value.errno == errno.ENOSPC
        assert shard.read_bytes() == b""
        free()
    line = row_line()
    append(shard, line)
    assert shard.read_bytes() == line


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a disk that really fills up (needs root, as in CI)."""
    with mounted_tmpfs(tmp_path / "tmpfs", "size=64k,mode=0755") as mountpoint:
        yield mountpoint


def test_a_full_tmpfs_keeps_only_whole_rows(tiny_tmpfs: Path) -> None:
    ballast = tiny_tmpfs / "ballast"
    ballast.write_bytes(b"\0" * 16384)
    shard = shard_path(tiny_tmpfs, JAN)
    appended: list[str] = []
    for _ in range(200):
        line = row_line(padding="x" * 700)
        try:
            append(shard, line)
        except StoreError as exc:
            assert exc.errno == errno.ENOSPC, exc
            break
        appended.append(validate(line).run_id)
    else:
        pytest.fail("the 64 KiB tmpfs never filled up")
    assert appended, "some rows fit before the disk was full"
    assert stored_run_ids(shard) == appended
    with pytest.raises(StoreError):
        append(shard, row_line(padding="x" * 700))
    assert stored_run_ids(shard) == appended
    ballast.unlink()  # space again: appends resume on a whole-line boundary
    line = row_line()
    append(shard, line)
    assert stored_run_ids(shard) == [*appended, validate(line).run_id]


# --- fsync -------------------------------------------------------------------------------------

STRACE = ("strace", "-f", "-qq", "-e", "signal=none")


def test_a_failed_fsync_is_reported_and_rolled_back(data_dir: Path) -> None:
    shard = shard_path(data_dir, JAN)
    earlier = row_line()
    append(shard, earlier)  # the file exists: the first fsync is the one of the rows
    inject = (*STRACE, "-e", "trace=fsync", "-e", "inject=fsync:error=EIO:when=1")
    outcomes = run_child(CHILD_APPEND, shard, (row_line() * 2).decode(), prefix=inject)
    assert outcomes[0]["errno"] == errno.EIO
    assert "fsync failed" in outcomes[0]["error"]
    assert shard.read_bytes() == earlier, "the rows that were not durable are gone"
    later = row_line()
    append(shard, later)
    assert shard.read_bytes() == earlier + later


def test_a_failed_directory_fsync_is_reported_and_the_retry_makes_the_name_durable(
    data_dir: Path, tmp_path: Path
) -> None:
    """The new file's directory fsync (the 1st fsync) fails: nothing is written into the file
    and the append is not acknowledged; the retry fsyncs the directory before its rows."""
    shard = shard_path(data_dir.resolve(), JAN)
    shard.parent.mkdir(parents=True)
    line = row_line()
    inject = (*STRACE, "-e", "trace=fsync", "-e", "inject=fsync:error=EIO:when=1")
    outcomes = run_child(CHILD_APPEND, shard, line.decode(), prefix=inject)
    assert outcomes[0]["errno"] == errno.EIO
    assert "directory fsync failed" in outcomes[0]["error"]
    assert shard.read_bytes() == b""
    assert traced_fsyncs(tmp_path, shard, line) == [shard.parent, shard]
    assert shard.read_bytes() == line


@pytest.mark.parametrize("move", ["rename", "delete"])
def test_a_shard_moved_away_during_the_fsync_gets_the_rows_again(
    data_dir: Path, tmp_path: Path, move: str
) -> None:
    """Archiving needs no lock: a shard renamed or deleted after the writer locked it (here:
    while its fsync is held up by strace) must not be the only home of the rows."""
    shard = shard_path(data_dir, JAN)
    earlier, line = row_line(), row_line()
    append(shard, earlier)  # exists: the first fsync is the rows' own
    slow = (*STRACE, "-e", "trace=fsync", "-e", "inject=fsync:delay_enter=1500000:when=1")
    child = subprocess.Popen(
        [*slow, sys.executable, "-c", CHILD_APPEND, str(shard), line.decode()],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while shard.stat().st_size == len(earlier):  # written, not yet fsynced
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    archived = tmp_path / "archived.jsonl"
    shard.rename(archived) if move == "rename" else shard.unlink()
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0 and json.loads(out) == [{"ok": True}]
    assert shard.read_bytes() == line  # the new file in the log holds the row
    if move == "rename":
        assert archived.read_bytes() == earlier + line  # a duplicate, never a loss


def traced_fsyncs(tmp_path: Path, shard: Path, payload: bytes) -> list[Path]:
    """What a child appending `payload` to `shard` fsyncs, in order (`strace -y` names fds)."""
    log = tmp_path / "strace.log"
    trace = (*STRACE, "-y", "-e", "trace=fsync", "-o", str(log))
    assert run_child(CHILD_APPEND, shard, payload.decode(), prefix=trace) == [{"ok": True}]
    return [Path(p) for p in re.findall(r"fsync\(\d+<([^>]*)>\) += 0", log.read_text())]


def test_the_directory_is_fsynced_when_a_shard_is_created(data_dir: Path, tmp_path: Path) -> None:
    data_dir = data_dir.resolve()
    runs_log = data_dir / "runs_log"
    jan, feb = shard_path(data_dir, JAN), shard_path(data_dir, "2026-02")
    # First row ever: runs_log/ is created (its parent fsynced), then the shard: its name is
    # made durable (runs_log/ fsynced) before its rows are written and fsynced.
    assert traced_fsyncs(tmp_path, jan, row_line()) == [data_dir, runs_log, jan]
    # Later appends to an existing shard fsync only the file.
    assert traced_fsyncs(tmp_path, jan, row_line()) == [jan]
    # A new month creates a new file: its name is made durable again.
    assert traced_fsyncs(tmp_path, feb, row_line("2026-02")) == [runs_log, feb]
    assert [len(stored_run_ids(p)) for p in (jan, feb)] == [2, 1]


def test_an_empty_leftover_shard_gets_its_directory_fsync(data_dir: Path, tmp_path: Path) -> None:
    """A creator that failed or died before its directory fsync left an empty file: the next
    writer that puts rows into it makes its name durable first."""
    shard = shard_path(data_dir.resolve(), JAN)
    shard.parent.mkdir(parents=True)
    shard.touch()
    assert traced_fsyncs(tmp_path, shard, row_line()) == [shard.parent, shard]


# --- permissions and odd paths -----------------------------------------------------------------


def as_another_user() -> tuple[str, ...]:
    """Root ignores permissions: demote the child to `nobody` (other users: chmod is enough)."""
    if os.geteuid() == 0:
        return ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    return ()


@pytest.mark.parametrize("read_only", ["data-dir", "runs-log", "shard"])
def test_an_unwritable_data_dir_is_a_store_error(traversable_dir: Path, read_only: str) -> None:
    data_dir = traversable_dir / "data"
    shard = shard_path(data_dir, JAN)
    shard.parent.mkdir(parents=True)
    if read_only == "data-dir":
        shard.parent.rmdir()
    if read_only == "shard":
        shard.write_bytes(row_line())
    before = shard.read_bytes() if read_only == "shard" else None
    for path in (data_dir, shard.parent, shard):
        if path.exists():
            path.chmod(0o555 if path.is_dir() else 0o444)
    outcomes = run_child(CHILD_APPEND, shard, row_line().decode(), prefix=as_another_user())
    assert outcomes[0]["errno"] == errno.EACCES, outcomes
    assert "Permission denied" in outcomes[0]["error"]
    assert (shard.read_bytes() if shard.exists() else None) == before


def test_a_data_dir_that_is_a_file_is_a_store_error(data_dir: Path) -> None:
    blocker = data_dir / "not-a-dir"
    blocker.write_bytes(b"")
    with pytest.raises(StoreError) as caught:
        append_rows(blocker, [validate(row_line())])
    assert caught.value.errno in (errno.ENOTDIR, errno.EEXIST)
    assert blocker.read_bytes() == b""


def test_store_error_carries_path_and_errno(data_dir: Path) -> None:
    err = StoreError(data_dir, "append failed: boom", errno.EIO)
    assert (err.path, err.errno, str(err)) == (
        data_dir,
        errno.EIO,
        f"{data_dir}: append failed: boom",
    )


def test_a_child_forked_during_an_append_does_not_keep_the_shards_lock(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runtime that forks (multiprocessing, a DataLoader) while another of its threads is
    inside `append` must not leave the child holding that shard's lock for its whole life:
    every writer of the month would stall behind it."""
    import threading
    import warnings

    path = shard_path(data_dir, "2026-05")
    append(path, b'{"warm":1}\n')
    in_fsync, forked = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:  # a disk slow enough for another thread to fork meanwhile
        in_fsync.set()
        forked.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    writer = threading.Thread(target=append, args=(path, b'{"row":2}\n'))
    writer.start()
    assert in_fsync.wait(10)
    with warnings.catch_warnings():  # "fork with threads may deadlock": this child only sleeps
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
    if child == 0:  # the child lives on, long after the parent's append
        time.sleep(5)
        os._exit(0)
    try:
        forked.set()
        writer.join(10)
        monkeypatch.setattr(os, "fsync", real_fsync)
        with open(path, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if the child holds it
        assert path.read_bytes() == b'{"warm":1}\n{"row":2}\n'
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)


# --- shards held open between appends (the daemon's writer) -----------------------------------


def held_fds(path: Path) -> list[str]:
    return fds_on(os.getpid(), path)


def test_a_held_shard_is_open_but_unlocked_between_appends(data_dir: Path) -> None:
    shard = shard_path(data_dir.resolve(), JAN)
    shards = OpenShards()
    first, second = row_line(), row_line()
    shards.append(shard, first)
    assert held_fds(shard) == [str(shard)] and len(shards) == 1
    with open(shard, "rb") as other:  # a client's direct write, an archiver: not kept out
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other, fcntl.LOCK_UN)
    shards.append(shard, second)
    assert held_fds(shard) == [str(shard)], "the same descriptor, not a second one"
    assert shard.read_bytes() == first + second
    shards.close()
    assert held_fds(shard) == [] and len(shards) == 0


def test_closing_held_shards_keeps_only_those_asked_for(data_dir: Path) -> None:
    data_dir = data_dir.resolve()
    jan, feb = shard_path(data_dir, JAN), shard_path(data_dir, "2026-02")
    shards = OpenShards()
    shards.append(jan, row_line())
    shards.append(feb, row_line("2026-02"))
    shards.close(keep=[feb])
    assert held_fds(jan) == [] and held_fds(feb) == [str(feb)]
    jan.unlink()
    shards.append(jan, row_line())  # opened afresh: a new file
    assert len(jan.read_bytes().splitlines()) == 1
    shards.close()


def test_a_held_shard_replaced_by_a_link_is_not_followed(data_dir: Path, tmp_path: Path) -> None:
    shard = shard_path(data_dir, JAN)
    target = tmp_path / "not-yours"
    target.write_bytes(b"precious\n")
    shards = OpenShards()
    first, second = row_line(), row_line()
    shards.append(shard, first)
    archived = shard.with_name("archived.jsonl")
    shard.rename(archived)
    shard.symlink_to(target)
    shards.append(shard, second)
    shards.close()
    assert target.read_bytes() == b"precious\n"
    assert archived.read_bytes() == first
    assert not shard.is_symlink() and shard.read_bytes() == second


def test_a_held_shards_directory_replaced_gets_a_fresh_directory(data_dir: Path) -> None:
    shard = shard_path(data_dir, JAN)
    shards = OpenShards()
    first, second = row_line(), row_line()
    shards.append(shard, first)
    shard.parent.rename(data_dir / "old_runs_log")
    shards.append(shard, second)
    shards.close()
    assert (data_dir / "old_runs_log" / shard.name).read_bytes() == first
    assert shard.read_bytes() == second


def test_a_held_shard_locked_elsewhere_times_out_then_recovers(data_dir: Path) -> None:
    shard = shard_path(data_dir, JAN)
    shards = OpenShards()
    first, second = row_line(), row_line()
    shards.append(shard, first)
    with open(shard, "rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(StoreError) as caught:
            shards.append(shard, second, lock_timeout=0.05)
    assert caught.value.errno == errno.ETIMEDOUT
    assert "another writer holds the shard's lock" in str(caught.value)
    assert shard.read_bytes() == first
    shards.append(shard, second, lock_timeout=0.05)
    shards.close()
    assert shard.read_bytes() == first + second


#: Appends each payload through one `OpenShards`, so that all but the first go to a held shard.
CHILD_APPEND_HELD = CHILD_APPEND.replace(
    "from mantisd.store import StoreError, append",
    "from mantisd.store import OpenShards, StoreError\nappend = OpenShards().append",
)


def test_a_failed_fsync_on_a_held_shard_is_rolled_back_and_the_next_append_reopens(
    data_dir: Path,
) -> None:
    shard = shard_path(data_dir, JAN)
    earlier = row_line()
    append(shard, earlier)
    lines = [row_line() for _ in range(3)]
    inject = (*STRACE, "-e", "trace=fsync", "-e", "inject=fsync:error=EIO:when=2")
    outcomes = run_child(CHILD_APPEND_HELD, shard, *(x.decode() for x in lines), prefix=inject)
    assert outcomes[0] == {"ok": True} and outcomes[2] == {"ok": True}
    assert outcomes[1]["errno"] == errno.EIO and "fsync failed" in outcomes[1]["error"]
    assert shard.read_bytes() == earlier + lines[0] + lines[2]
