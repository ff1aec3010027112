"""Nothing planted in the data dir is followed (design.md, "Trust"), on real links and FIFOs.

A group member who can write the data dir replaces a shard, `runs_log/` or `rejected/` with a
link to a root-owned file, a dangling link, a FIFO, a directory. Whoever writes (the store,
the daemon's rejected log, the client fallback) moves the odd entry aside and writes a fresh
regular file; whoever reads (readers, `mantis runs stats`) never reads through it. The
target outside the data dir stays exactly as it was.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from mantis_client import Outcome, append
from mantisd.cli import mantis
from mantisd.daemon.rejected import RejectedLog
from mantisd.paths import list_shards, shard_path
from mantisd.reader import Scanner, ScanReport, StatRow, iter_windows
from mantisd.safe_fs import ASIDE_TAG, UnsafeEntryError, moved_aside_count
from mantisd.sample import generate
from mantisd.schema import validate
from mantisd.store import append as store_append
from mantisd.store import append_rows
from tests.daemon_process import wait_for
from tests.proc import wait_for_flock_waiter
from tests.rows import make_row
from tests.stats_data import GOLDEN, golden_run, write_golden
from tests.test_store import CHILD_APPEND, row_line

JAN = "2026-01"
SCRIPT = b"#!/bin/sh\necho nightly maintenance\n"


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Everything about a file that a write through a link would change."""

    content: bytes
    size: int
    mtime_ns: int
    ctime_ns: int
    mode: int


def snapshot(path: Path) -> Snapshot:
    st = path.stat()
    return Snapshot(path.read_bytes(), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A root-only directory outside the data dir, holding a root-owned 0700 script."""
    directory = tmp_path / "root-only"
    directory.mkdir(mode=0o700)
    script = directory / "maintenance.sh"
    script.write_bytes(SCRIPT)
    script.chmod(0o700)
    return directory


def state_of(directory: Path) -> dict[str, Snapshot]:
    """A snapshot of every file in `directory`."""
    return {p.name: snapshot(p) for p in directory.iterdir()}


def asides(directory: Path, name: str) -> list[Path]:
    """The entries `name` was moved aside to."""
    return sorted(directory.glob(f"{name}{ASIDE_TAG}*"))


def stored_ids(path: Path) -> list[str]:
    content = path.read_bytes()
    assert content.endswith(b"\n")
    return [validate(x).run_id for x in content.splitlines()]


def assert_a_fresh_shard(shard: Path, lines: list[bytes]) -> None:
    st = os.lstat(shard)
    assert stat.S_ISREG(st.st_mode), "the rows went to a regular file"
    assert not st.st_mode & 0o007, "created like any shard"
    assert shard.read_bytes() == b"".join(lines), "every row, and nothing else"


# --- the store (daemon writer and client fallback) ----------------------------------------------


def plant_link_to_script(shard: Path, outside: Path) -> Path:
    shard.symlink_to(outside / "maintenance.sh")
    return outside / "maintenance.sh"


def plant_dangling_link(shard: Path, outside: Path) -> Path:
    shard.symlink_to(outside / "created-by-root")
    return outside / "created-by-root"


def plant_fifo(shard: Path, outside: Path) -> None:
    os.mkfifo(shard)


def plant_directory(shard: Path, outside: Path) -> None:
    shard.mkdir()
    (shard / "inside").write_bytes(b"kept")


PLANTS: dict[str, Callable[[Path, Path], object]] = {
    "link-to-a-root-script": plant_link_to_script,
    "dangling-link": plant_dangling_link,
    "fifo": plant_fifo,
    "directory": plant_directory,
}


@pytest.mark.timeout(30)  # a FIFO opened for writing without a reader would block forever
@pytest.mark.parametrize("plant", PLANTS)
def test_an_odd_entry_in_a_shards_place_is_moved_aside(
    data_dir: Path, outside: Path, plant: str, caplog: pytest.LogCaptureFixture
) -> None:
    shard = shard_path(data_dir, JAN)
    shard.parent.mkdir()
    before = snapshot(outside / "maintenance.sh")
    PLANTS[plant](shard, outside)
    lstat_before = os.lstat(shard)
    moved_before = moved_aside_count()
    lines = [row_line(), row_line()]
    with caplog.at_level(logging.ERROR, logger="mantisd"):
        store_append(shard, lines[0])
        append_rows(data_dir, [validate(lines[1])])
    assert_a_fresh_shard(shard, lines)
    assert snapshot(outside / "maintenance.sh") == before, "the target is untouched"
    assert sorted(outside.iterdir()) == [outside / "maintenance.sh"], "nothing created outside"
    (aside,) = asides(shard.parent, shard.name)
    assert os.lstat(aside).st_ino == lstat_before.st_ino, "the very entry found was moved"
    assert moved_aside_count() == moved_before + 1
    if plant == "directory":
        assert (aside / "inside").read_bytes() == b"kept"
    assert [month for month, _ in list_shards(data_dir)] == [JAN], "readers ignore the aside"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(shard) in errors[0] and aside.name in errors[0]


@pytest.mark.parametrize("odd", ["link-to-an-outside-dir", "regular-file"])
def test_a_runs_log_that_is_not_a_real_directory_is_moved_aside(
    data_dir: Path, outside: Path, odd: str
) -> None:
    runs_log = data_dir / "runs_log"
    decoy = outside / f"{JAN}.jsonl"  # a shard-named file the link would have led to
    decoy.write_bytes(SCRIPT)
    if odd == "regular-file":
        runs_log.write_bytes(b"not a directory")
    else:
        runs_log.symlink_to(outside)
    before = state_of(outside)
    line = row_line()
    store_append(shard_path(data_dir, JAN), line)
    assert state_of(outside) == before
    assert stat.S_ISDIR(os.lstat(runs_log).st_mode)
    assert stat.S_IMODE(os.lstat(runs_log).st_mode) == 0o770 & ~current_umask()
    assert_a_fresh_shard(shard_path(data_dir, JAN), [line])
    (aside,) = asides(data_dir, "runs_log")
    assert os.path.islink(aside) == (odd != "regular-file")


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_link_planted_while_a_writer_waits_for_the_lock(data_dir: Path, outside: Path) -> None:
    """The writer opened the real shard; before it gets the lock, the shard is renamed away
    and a link put in its place: the writer must not follow it when it reopens."""
    shard = shard_path(data_dir, JAN)
    old, new = row_line(), row_line()
    store_append(shard, old)
    before = snapshot(outside / "maintenance.sh")
    keeper = os.open(shard, os.O_RDONLY)
    try:
        fcntl.flock(keeper, fcntl.LOCK_EX)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD_APPEND, str(shard), new.decode()],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for_flock_waiter(os.fstat(keeper).st_ino, lambda: child.poll() is None)
        shard.rename(shard.with_name("archived.jsonl"))
        plant_link_to_script(shard, outside)
        fcntl.flock(keeper, fcntl.LOCK_UN)
        out, err = child.communicate(timeout=30)
    finally:
        os.close(keeper)
    assert child.returncode == 0, err
    assert json.loads(out) == [{"ok": True}]
    assert snapshot(outside / "maintenance.sh") == before
    assert_a_fresh_shard(shard, [new])
    assert shard.with_name("archived.jsonl").read_bytes() == old
    assert len(asides(shard.parent, shard.name)) == 1
    assert "moved aside" in err


def test_the_client_fallback_does_not_follow_a_planted_link(
    data_dir: Path, outside: Path, short_tmp: Path
) -> None:
    row = make_row()
    shard = shard_path(data_dir, row["finished_at"][:7])
    shard.parent.mkdir()
    before = snapshot(outside / "maintenance.sh")
    plant_link_to_script(shard, outside)
    result = append(row, socket_path=short_tmp / "no-daemon", data_dir=data_dir)
    assert result.outcome is Outcome.WRITTEN_DIRECTLY, result
    assert snapshot(outside / "maintenance.sh") == before
    assert stored_ids(shard) == [row["run_id"]]
    assert len(asides(shard.parent, shard.name)) == 1


# --- the daemon's rejected log -----------------------------------------------------------------


def plant_rejected_dir_link(data_dir: Path, outside: Path) -> None:
    (data_dir / "runs_log").mkdir()
    (data_dir / "runs_log" / "rejected").symlink_to(outside)


def plant_runs_log_link(data_dir: Path, outside: Path) -> None:
    (data_dir / "runs_log").symlink_to(outside)


def plant_rejected_file_link(data_dir: Path, outside: Path) -> None:
    (data_dir / "runs_log" / "rejected").mkdir(parents=True)
    (data_dir / "runs_log" / "rejected" / "rejected.jsonl").symlink_to(outside / "maintenance.sh")


def plant_rejected_fifo(data_dir: Path, outside: Path) -> None:
    (data_dir / "runs_log" / "rejected").mkdir(parents=True)
    os.mkfifo(data_dir / "runs_log" / "rejected" / "rejected.jsonl")


REJECTED_PLANTS: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "rejected-dir-link": (plant_rejected_dir_link, "runs_log/rejected"),
    "runs-log-link": (plant_runs_log_link, "runs_log"),
    "rejected-file-link": (plant_rejected_file_link, "runs_log/rejected/rejected.jsonl"),
    "rejected-file-fifo": (plant_rejected_fifo, "runs_log/rejected/rejected.jsonl"),
}


@pytest.mark.timeout(30)  # the old log opened a FIFO for writing and blocked forever
@pytest.mark.parametrize("plant", REJECTED_PLANTS)
async def test_the_rejected_log_does_not_follow_planted_entries(
    data_dir: Path, outside: Path, plant: str
) -> None:
    make, planted = REJECTED_PLANTS[plant]
    decoy = outside / "rejected.jsonl"  # what a followed `rejected/` link would append to
    decoy.write_bytes(b"")
    make(data_dir, outside)
    before = state_of(outside)
    moved_before = moved_aside_count()
    log = RejectedLog(data_dir, max_bytes=1 << 20)
    log.record("invalid", "row: expected a JSON object", b"[1, 2]")
    await log.flush()
    assert state_of(outside) == before
    written = data_dir / "runs_log" / "rejected" / "rejected.jsonl"
    assert stat.S_ISREG(os.lstat(written).st_mode)
    for directory in (data_dir / "runs_log", data_dir / "runs_log" / "rejected"):
        assert stat.S_ISDIR(os.lstat(directory).st_mode)
    (entry,) = [json.loads(x) for x in written.read_bytes().splitlines()]
    assert entry["line"] == "[1, 2]"
    place = data_dir / planted
    assert len(asides(place.parent, place.name)) == 1
    assert moved_aside_count() == moved_before + 1


# --- readers -----------------------------------------------------------------------------------


@pytest.mark.timeout(30)  # reading a FIFO without a writer would block forever
@pytest.mark.parametrize("odd", ["link", "fifo"])
def test_readers_never_read_a_shard_that_is_not_a_regular_file(
    data_dir: Path, tmp_path: Path, odd: str
) -> None:
    """A `YYYY-MM.jsonl` link to rows elsewhere (or a FIFO) is not a shard: not listed,
    not read, by the scanner and by `mantis runs stats`."""
    write_golden(data_dir)  # 2026-05
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_bytes(b"".join(golden_run(k, run_id=f"planted-{k}") for k in range(6, 9)))
    planted = shard_path(data_dir, "2026-04")
    if odd == "link":
        planted.symlink_to(elsewhere)
    else:
        os.mkfifo(planted)
    assert [month for month, _ in list_shards(data_dir)] == ["2026-05"]
    report = ScanReport()
    rows = list(Scanner(StatRow).scan(data_dir, report))
    assert not [r for r in rows if r.run_id.startswith("planted-")]
    assert report.shards_read == 1
    with pytest.raises(UnsafeEntryError, match="not"):
        list(iter_windows(planted))
    result = CliRunner(env={"MANTIS_DATA_DIR": None}).invoke(
        mantis, ["runs", "stats", GOLDEN, "--data-dir", str(data_dir), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run_count"] == 5, "the planted runs do not count"


def test_readers_refuse_a_runs_log_that_is_a_link(data_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write_golden(elsewhere)
    (data_dir / "runs_log").symlink_to(elsewhere / "runs_log")
    with pytest.raises(UnsafeEntryError, match="symbolic link"):
        list_shards(data_dir)
    with pytest.raises(UnsafeEntryError):
        list(Scanner(StatRow).scan(data_dir, ScanReport()))
    result = CliRunner(env={"MANTIS_DATA_DIR": None}).invoke(
        mantis, ["runs", "stats", GOLDEN, "--data-dir", str(data_dir)]
    )
    assert result.exit_code != 0
    assert "cannot read the run log" in result.stderr
    assert "runs_log" in result.stderr and "symbolic link" in result.stderr


# --- the sample tool (`mantis dev generate`) -----------------------------------------------------


def test_the_sample_tool_does_not_write_through_a_planted_runs_log(
    data_dir: Path, outside: Path
) -> None:
    (data_dir / "runs_log").symlink_to(outside)
    before = state_of(outside)
    end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    written = generate(data_dir, rows=20, months=1, workflows=2, end=end)
    assert state_of(outside) == before
    assert written == [shard_path(data_dir, "2026-02")]
    assert stat.S_ISREG(os.lstat(written[0]).st_mode)
    assert len(written[0].read_bytes().splitlines()) == 20
    assert len(asides(data_dir, "runs_log")) == 1


def test_the_sample_tool_refuses_a_link_in_a_shards_place(data_dir: Path, outside: Path) -> None:
    shard = shard_path(data_dir, "2026-02")
    shard.parent.mkdir()
    plant_dangling_link(shard, outside)
    with pytest.raises(FileExistsError) as caught:
        generate(data_dir, rows=20, months=1, end=dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    assert caught.value.filename == str(shard)
    assert sorted(outside.iterdir()) == [outside / "maintenance.sh"]


#: Waits for the start file, then appends one row per argument (its run_id) to the shard.
CHILD_RACER = """
import json, sys, time
from pathlib import Path
from mantisd.schema import validate
from mantisd.store import append
shard, start, template = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
lines = [validate(dict(template, run_id=run_id)).line for run_id in sys.argv[4:]]
(start.parent / f"ready-{sys.argv[4]}").touch()
while not start.exists():
    time.sleep(0.0005)
for line in lines:
    append(shard, line)
"""


@pytest.mark.parametrize("round_", range(5))
def test_writers_meeting_the_same_link_keep_every_row_in_one_fresh_shard(
    data_dir: Path, outside: Path, tmp_path: Path, round_: int
) -> None:
    """Each of them finds the link; only one may move it aside. One that moved aside what
    another had just created would hide that writer's acknowledged rows."""
    template = make_row(created_at="2026-01-15T11:00:00Z", finished_at="2026-01-15T12:00:00Z")
    shard = shard_path(data_dir, JAN)
    shard.parent.mkdir()
    plant_link_to_script(shard, outside)
    before = snapshot(outside / "maintenance.sh")
    start = tmp_path / "start"
    run_ids = {n: [f"w{n}-{i}" for i in range(3)] for n in range(6)}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD_RACER, str(shard), str(start), json.dumps(template)] + ids
        )
        for ids in run_ids.values()
    ]
    try:
        wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == len(racers), timeout=60)
        start.touch()  # all at once
        assert [p.wait(timeout=60) for p in racers] == [0] * len(racers)
    finally:
        for p in racers:
            p.kill()
            p.wait()
    assert sorted(stored_ids(shard)) == sorted(x for ids in run_ids.values() for x in ids)
    (aside,) = asides(shard.parent, shard.name)
    assert aside.is_symlink()
    assert snapshot(outside / "maintenance.sh") == before
