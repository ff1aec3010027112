"""`mantis runs ship` and archived months, for real: archives made by `mantis runs archive`,
a real PostgreSQL. Every run reaches the database exactly once, whatever had been shipped
when its month was archived, when the month is archived again with late rows, when an
archive is damaged, when the shipper is killed in the middle of one, and under `--follow`."""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from mantisd import compressed
from mantisd.fleet.shard_file import open_log_dir
from tests.daemon_process import wait_for
from tests.fleet import (
    MANTIS,
    archive,
    count,
    execute,
    follow,
    line_ids,
    month_lines,
    rows,
    run_ids,
    ship,
    shipped,
    stop,
    summary,
    valid_ids,
)
from tests.pg import PgServer, running_postgres
from tests.stats_data import write_shard

TORN = b'{"run_id": "torn-row", "sche\n'


def archived(data_dir: Path, month: str) -> Path:
    return data_dir / "runs_log" / f"{month}.jsonl.zst"


def names(data_dir: Path) -> list[str]:
    return sorted(path.name for path in (data_dir / "runs_log").iterdir())


def content_of(path: Path) -> bytes:
    """An archive's content as any zstd tool reads it."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes()))
    return reader.readall()


def seek_table(path: Path) -> list[tuple[int, int, int]]:
    with open(path, "rb") as f:
        table = compressed.frames(f.fileno())
    assert table is not None, f"{path} has no seek table"
    return table


def corrupt_frame(path: Path, index: int) -> bytes:
    """Flip 64 bytes in the middle of frame `index` (bit rot); the original bytes."""
    original = path.read_bytes()
    offset, size, _ = seek_table(path)[index]
    damaged = bytearray(original)
    for at in range(offset + size // 2, offset + size // 2 + 64):
        damaged[at] ^= 0xFF
    path.write_bytes(bytes(damaged))
    return original


def truncate_half(path: Path) -> bytes:
    """Cut the archive in half (a copy that stopped short); the original bytes."""
    original = path.read_bytes()
    path.write_bytes(original[: len(original) // 2])
    return original


def dead_letters(url: str) -> list[tuple[str, bytes]]:
    found = rows(url, "SELECT shard, raw FROM mantis.dead_letters ORDER BY shard, byte_offset")
    return [(shard, bytes(raw)) for shard, raw in found]


@pytest.fixture
def private_server() -> Iterator[PgServer]:
    """A server of this test's own, which it may stop and start."""
    with running_postgres() as server:
        yield server


# --- reading an archive forward --------------------------------------------------------------


def test_an_archive_reads_by_offset_across_frames_and_stops_at_a_damaged_frame(
    data_dir: Path,
) -> None:
    from mantisd.fleet.archive_file import ArchiveContent, open_archive

    write_shard(data_dir, "2026-09", month_lines("2026-09", 2500))
    archive(data_dir, before="2026-10")
    path = archived(data_dir, "2026-09")
    table = seek_table(path)
    assert len(table) >= 2  # the premise: more than one frame
    content = content_of(path)
    boundary = table[0][2]
    log_fd = open_log_dir(data_dir)
    assert log_fd is not None
    try:
        opened = open_archive(log_fd, data_dir / "runs_log", path.name)
        try:
            assert isinstance(opened.content, ArchiveContent)
            assert opened.size == len(content)
            for offset, size in [(0, 10), (boundary - 7, 20), (5, len(content)), (boundary, 1)]:
                assert opened.content.pread(size, offset) == content[offset : offset + size]
            assert opened.content.pread(10, len(content)) == b""
            assert opened.damage is None
        finally:
            opened.close()
        corrupt_frame(path, 1)
        opened = open_archive(log_fd, data_dir / "runs_log", path.name)
        try:
            assert isinstance(opened.content, ArchiveContent)
            assert opened.content.pread(len(content), 0) == content[:boundary]
            assert opened.damage is not None and "frame 2" in opened.damage
            assert opened.content.pread(10, boundary) == b""
        finally:
            opened.close()
    finally:
        os.close(log_fd)


# --- a month archived while the shipper was behind -------------------------------------------


def test_a_month_archived_before_it_was_all_shipped_is_shipped_in_full_once(
    pg_url: str, data_dir: Path
) -> None:
    """The reviewer's case: the database was away, the month was archived meanwhile. The
    archive goes on from where the shard's cursor stopped."""
    before, after = month_lines("2026-09", 30), month_lines("2026-09", 20)
    october = month_lines("2026-10", 3)
    write_shard(data_dir, "2026-09", [*before[:10], TORN, *before[10:]])
    write_shard(data_dir, "2026-10", october)
    assert shipped(ship(pg_url, data_dir))["total"] == (33, 0, 1)
    write_shard(data_dir, "2026-09", [*after[:5], b"not json\n", *after[5:]])  # not shipped ...
    assert [r.action for r in archive(data_dir, before="2026-10")] == ["archived"]  # ... yet
    assert names(data_dir) == ["2026-09.jsonl.zst", "2026-10.jsonl"]
    assert shipped(ship(pg_url, data_dir)) == {
        "2026-09.jsonl.zst": (20, 0, 1),
        "total": (20, 0, 1),
    }
    assert run_ids(pg_url) == line_ids(before + after + october)
    assert dead_letters(pg_url) == [
        ("2026-09.jsonl", TORN[:-1]),
        ("2026-09.jsonl.zst", b"not json"),
    ]
    assert "nothing new to ship" in ship(pg_url, data_dir).stdout


def test_an_archive_nothing_proves_shipped_is_read_again_and_skipped_by_key(
    pg_url: str, data_dir: Path
) -> None:
    """Cursors lost (a database restored from an older backup): the archive is read from its
    start; its runs already there are duplicates, its bad line no second dead letter."""
    lines = month_lines("2026-09", 40)
    write_shard(data_dir, "2026-09", [*lines[:20], TORN, *lines[20:]])
    assert shipped(ship(pg_url, data_dir))["total"] == (40, 0, 1)
    archive(data_dir, before="2026-10")
    execute(pg_url, "DELETE FROM mantis.cursors")
    assert shipped(ship(pg_url, data_dir)) == {
        "2026-09.jsonl.zst": (0, 40, 0),
        "total": (0, 40, 0),
    }
    assert run_ids(pg_url) == line_ids(lines)
    assert dead_letters(pg_url) == [("2026-09.jsonl", TORN[:-1])]


def test_an_archive_made_again_with_late_rows_ships_what_was_not_shipped(
    pg_url: str, data_dir: Path
) -> None:
    first = month_lines("2026-09", 25)
    write_shard(data_dir, "2026-09", first)
    archive(data_dir, before="2026-10")  # archived before anything was shipped
    assert shipped(ship(pg_url, data_dir)) == {"2026-09.jsonl.zst": (25, 0, 0), "total": (25, 0, 0)}
    shipped_late, behind = month_lines("2026-09", 1), month_lines("2026-09", 2)
    write_shard(data_dir, "2026-09", shipped_late)  # a late row: the month's shard again
    assert shipped(ship(pg_url, data_dir)) == {"2026-09.jsonl": (1, 0, 0), "total": (1, 0, 0)}
    write_shard(data_dir, "2026-09", behind)  # two more, not shipped before ...
    assert [r.action for r in archive(data_dir, before="2026-10")] == ["merged"]  # ... this
    assert names(data_dir) == ["2026-09.jsonl.zst"]
    assert shipped(ship(pg_url, data_dir)) == {"2026-09.jsonl.zst": (2, 1, 0), "total": (2, 1, 0)}
    assert run_ids(pg_url) == line_ids(first + shipped_late + behind)
    assert "nothing new to ship" in ship(pg_url, data_dir).stdout


# --- damaged archives ------------------------------------------------------------------------


def test_a_truncated_archive_is_reported_and_the_rest_shipped(pg_url: str, data_dir: Path) -> None:
    august, september = month_lines("2026-08", 30), month_lines("2026-09", 20)
    october = month_lines("2026-10", 5)
    write_shard(data_dir, "2026-08", august)
    write_shard(data_dir, "2026-09", september)
    archive(data_dir, before="2026-10")
    write_shard(data_dir, "2026-10", october)
    original = truncate_half(archived(data_dir, "2026-08"))
    result = ship(pg_url, data_dir)
    assert result.returncode == 1
    assert "2026-08.jsonl.zst: damaged (truncated)" in result.stderr
    assert "1 file of the log could not be read" in result.stderr
    assert "Traceback" not in result.stderr
    table = result.stdout.splitlines()[1:]
    assert len({len(line) for line in table}) == 1, "an archive's name fits its column"
    assert summary(result.stdout) == {
        "2026-09.jsonl.zst": (20, 0, 0),
        "2026-10.jsonl": (5, 0, 0),
        "total": (25, 0, 0),
    }
    archived(data_dir, "2026-08").write_bytes(original)  # restored from a backup
    assert shipped(ship(pg_url, data_dir)) == {"2026-08.jsonl.zst": (30, 0, 0), "total": (30, 0, 0)}
    assert run_ids(pg_url) == line_ids(august + september + october)


def test_an_archive_with_a_corrupt_frame_ships_what_is_before_it_then_the_rest_once_restored(
    pg_url: str, data_dir: Path
) -> None:
    lines = month_lines("2026-09", 2500)
    write_shard(data_dir, "2026-09", lines)
    write_shard(data_dir, "2026-10", month_lines("2026-10", 2))
    archive(data_dir, before="2026-10")
    path = archived(data_dir, "2026-09")
    in_first_frame = content_of(path)[: seek_table(path)[0][2]].count(b"\n")
    original = corrupt_frame(path, 1)
    result = ship(pg_url, data_dir, "--batch-rows", "500")
    assert result.returncode == 1
    assert "2026-09.jsonl.zst: damaged (frame 2 of" in result.stderr
    assert summary(result.stdout)["2026-09.jsonl.zst"] == (in_first_frame, 0, 0)
    assert summary(result.stdout)["2026-10.jsonl"] == (2, 0, 0)
    again = ship(pg_url, data_dir)  # still damaged: said again, nothing read twice
    assert again.returncode == 1 and "nothing new to ship" in again.stdout
    path.write_bytes(original)
    assert shipped(ship(pg_url, data_dir)) == {
        "2026-09.jsonl.zst": (len(lines) - in_first_frame, 0, 0),
        "total": (len(lines) - in_first_frame, 0, 0),
    }
    assert len(run_ids(pg_url)) == len(lines) + 2
    assert rows(pg_url, "SELECT count(*) FROM mantis.dead_letters") == [(0,)]


def test_a_linked_archive_is_not_followed_and_the_rest_shipped(
    pg_url: str, data_dir: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    write_shard(elsewhere, "2026-09", month_lines("2026-09", 3))
    archive(elsewhere, before="2026-10")
    october = month_lines("2026-10", 2)
    write_shard(data_dir, "2026-10", october)
    archived(data_dir, "2026-09").symlink_to(archived(elsewhere, "2026-09"))
    result = ship(pg_url, data_dir)
    assert result.returncode == 1
    assert "2026-09.jsonl.zst: not shipped: a symbolic link" in result.stderr
    assert run_ids(pg_url) == line_ids(october)


# --- the command -----------------------------------------------------------------------------


def test_dry_run_says_what_of_an_archive_is_behind(pg_url: str, data_dir: Path) -> None:
    before, after = month_lines("2026-09", 30), month_lines("2026-09", 4)
    write_shard(data_dir, "2026-08", month_lines("2026-08", 3))
    write_shard(data_dir, "2026-09", before)
    shipped(ship(pg_url, data_dir))
    write_shard(data_dir, "2026-09", after)
    archive(data_dir, before="2026-10")
    truncate_half(archived(data_dir, "2026-08"))
    dry = ship(pg_url, data_dir, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    behind, start = len(b"".join(after)), len(b"".join(before))
    assert re.search(rf"2026-09\.jsonl\.zst +{behind} +4  offset {start}\n", dry.stdout), dry.stdout
    assert re.search(r"2026-08\.jsonl\.zst +0 +0  the start \(damaged: truncated", dry.stdout)
    assert len(run_ids(pg_url)) == 33  # moved nothing
    ship(pg_url, data_dir)
    again = ship(pg_url, data_dir, "--dry-run")
    assert re.search(rf"2026-09\.jsonl\.zst +0 +0  offset {start + behind}\n", again.stdout)


# --- faults ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_follow_ships_a_month_archived_while_the_database_was_away(
    private_server: PgServer, data_dir: Path
) -> None:
    url = private_server.create_database()
    write_shard(data_dir, "2026-07", month_lines("2026-07", 4))
    archive(data_dir, before="2026-08")
    truncate_half(archived(data_dir, "2026-07"))  # damaged all along: said once, blocks nothing
    shipped_lines = month_lines("2026-09", 40)
    write_shard(data_dir, "2026-09", shipped_lines)
    shipper = follow(url, data_dir)
    try:
        wait_for(lambda: count(url) == 40, timeout=60)
        private_server.stop("fast")
        behind = month_lines("2026-09", 30)
        write_shard(data_dir, "2026-09", behind)
        assert [r.action for r in archive(data_dir, before="2026-10")] == ["archived"]
        october = month_lines("2026-10", 5)
        write_shard(data_dir, "2026-10", october)
        time.sleep(1.0)  # a few failed attempts, backing off
        private_server.start()
        wait_for(lambda: count(url) == 75, timeout=90)
    finally:
        code, out, err = stop(shipper)
    assert code == 0, err
    assert "database reachable again" in err
    assert err.count("2026-07.jsonl.zst: damaged (truncated)") == 1
    assert summary(out)["2026-09.jsonl.zst"] == (30, 0, 0)
    assert run_ids(url) == line_ids(shipped_lines + behind + october)


@pytest.mark.slow
def test_kill_9_while_archives_are_shipped_then_resume(pg_url: str, data_dir: Path) -> None:
    """Kill the shipper at random instants while it ships two archives (one it had partly
    shipped as a shard, one it never saw); after every kill the committed cursors cover only
    committed rows; in the end every run is there once, every bad line dead-lettered once."""
    seed = random.randrange(1 << 30)
    chance = random.Random(seed)

    def with_torn_lines(month: str, count_: int) -> list[bytes]:
        lines = month_lines(month, count_)
        for at in range(250, count_, 997):
            lines.insert(at, TORN)
        return lines

    write_shard(data_dir, "2026-09", with_torn_lines("2026-09", 500))
    assert shipped(ship(pg_url, data_dir))["total"] == (500, 0, 1)
    write_shard(data_dir, "2026-09", with_torn_lines("2026-09", 3000))  # not shipped ...
    write_shard(data_dir, "2026-08", with_torn_lines("2026-08", 3000))
    archive(data_dir, before="2026-10")  # ... when both months are archived
    contents = {name: content_of(archived(data_dir, name[:7])) for name in names(data_dir)}
    everything = {run_id for content in contents.values() for run_id in valid_ids(content)}
    deadline = time.monotonic() + 30
    kills = interrupted = 0
    while interrupted < 3 and kills < 12 and time.monotonic() < deadline:
        if count(pg_url) == len(everything):  # a run finished before its kill (a fast machine)
            execute(pg_url, "TRUNCATE mantis.runs, mantis.cursors, mantis.dead_letters")
        before = count(pg_url)
        proc = subprocess.Popen(
            [str(MANTIS), "runs", "ship", "--to", pg_url, "--data-dir", str(data_dir)]
            + ["--batch-rows", "10"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if kills % 2:  # half the kills land anywhere from start-up on ...
            time.sleep(chance.uniform(0.05, 1.5))
        else:  # ... half once batches are committing
            with contextlib.suppress(TimeoutError):
                wait_for(lambda b=before: count(pg_url) > b, timeout=10, interval=0.005)  # type: ignore[misc]
            time.sleep(chance.uniform(0, 0.3))
        proc.kill()
        proc.wait()
        kills += 1
        shipped_ids = set(run_ids(pg_url))
        interrupted += before < len(shipped_ids) < len(everything)
        for shard, offset in rows(pg_url, "SELECT shard, byte_offset FROM mantis.cursors"):
            if shard in contents:
                missing = set(valid_ids(contents[shard][:offset])) - shipped_ids
                assert not missing, f"seed {seed}: {shard} marked shipped to {offset}"
        assert shipped_ids <= everything, f"seed {seed}"
    assert interrupted >= 2, f"seed {seed}: only {interrupted} kills landed mid-ship"
    final = ship(pg_url, data_dir)
    assert final.returncode == 0, final.stderr
    assert run_ids(pg_url) == sorted(everything), f"seed {seed}, {kills} kills"
    torn = sum(content.count(TORN) for content in contents.values())
    assert rows(pg_url, "SELECT count(*) FROM mantis.dead_letters") == [(torn,)], f"seed {seed}"
    offsets = dict(rows(pg_url, "SELECT shard, byte_offset FROM mantis.cursors"))
    assert {name: offsets[name] for name in contents} == {
        name: len(content) for name, content in contents.items()
    }
