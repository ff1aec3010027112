"""`mantis runs archive`: closed months compressed in place, late rows merged, retention.

Real files throughout: the archive is checked by decompressing it with zstd's own streaming
reader, and the log by the same reader `stats` uses.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import io
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner, Result

from mantisd.archive import LOCK_FILE, MonthResult, archive_log, shift
from mantisd.cli import mantis
from mantisd.paths import list_log_files, shard_path
from mantisd.reader import CheckedRow, Scanner, ScanReport
from mantisd.sample import generate
from mantisd.schema import validate
from mantisd.store import append_rows
from tests.fleet import month_line, month_lines
from tests.proc import LIMIT_ADDRESS_SPACE, run_limited, wait_for_flock_waiter
from tests.rows import make_row, utc
from tests.stats_data import write_shard

NOW = dt.datetime(2026, 11, 15, tzinfo=dt.UTC)
MONTHS = ["2026-07", "2026-08", "2026-09", "2026-10", "2026-11"]


def invoke(*args: str) -> Result:
    return CliRunner(env={"MANTIS_DATA_DIR": None}).invoke(mantis, ["runs", "archive", *args])


def names(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "runs_log").iterdir())


def run_ids(data_dir: Path) -> tuple[list[str], ScanReport]:
    """Every run_id the readers see, newest first, and what they skipped."""
    report = ScanReport()
    return [row.run_id for row in Scanner(CheckedRow).scan(data_dir, report)], report


def archive_text(path: Path) -> bytes:
    """The archive as any zstd tool reads it: one stream over every frame."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes()))
    return reader.readall()


@pytest.fixture
def log(data_dir: Path) -> dict[str, list[bytes]]:
    """Five months of 300 rows each (2026-07 to 2026-11), written as the store writes."""
    lines = {month: month_lines(month, 300) for month in MONTHS}
    for month, month_rows in lines.items():
        write_shard(data_dir, month, month_rows)
    return lines


def test_closed_months_past_the_newest_n_are_compressed_and_read_the_same(
    data_dir: Path, log: dict[str, list[bytes]]
) -> None:
    before, _ = run_ids(data_dir)
    results = list(archive_log(data_dir, keep_months=2, now=NOW))
    assert [(r.month, r.action, r.lines) for r in results] == [
        ("2026-07", "archived", 300),
        ("2026-08", "archived", 300),
        ("2026-09", "archived", 300),
    ]
    assert names(data_dir) == [
        "2026-07.jsonl.zst",
        "2026-08.jsonl.zst",
        "2026-09.jsonl.zst",
        "2026-10.jsonl",
        "2026-11.jsonl",
    ]
    for month in MONTHS[:3]:  # byte for byte what the shard held, for any zstd tool
        assert archive_text(data_dir / "runs_log" / f"{month}.jsonl.zst") == b"".join(log[month])
    after, report = run_ids(data_dir)
    assert after == before and report.damaged == [] and report.duplicates == 0
    assert list(archive_log(data_dir, keep_months=2, now=NOW)) == []  # nothing left to do


def test_the_archive_keeps_the_shards_mode(data_dir: Path, log: dict[str, list[bytes]]) -> None:
    shard = shard_path(data_dir, "2026-07")
    shard.chmod(0o640)
    list(archive_log(data_dir, keep_months=5, now=NOW.replace(month=12)))
    archive = data_dir / "runs_log" / "2026-07.jsonl.zst"
    assert stat.S_IMODE(archive.stat().st_mode) == 0o640


def test_a_late_row_for_an_archived_month_is_read_then_merged(
    data_dir: Path, log: dict[str, list[bytes]]
) -> None:
    list(archive_log(data_dir, keep_months=2, now=NOW))
    late = make_row(
        finished_at=utc(dt.datetime(2026, 8, 20, tzinfo=dt.UTC)),
        created_at=utc(dt.datetime(2026, 8, 19, tzinfo=dt.UTC)),
    )
    append_rows(data_dir, [validate(late)])  # the client fallback's own write
    assert "2026-08.jsonl" in names(data_dir)
    seen, _ = run_ids(data_dir)
    assert late["run_id"] in seen and len(seen) == 1501  # counted before any merge
    (merged,) = archive_log(data_dir, keep_months=2, now=NOW)
    assert (merged.month, merged.action, merged.lines) == ("2026-08", "merged", 1)
    assert "2026-08.jsonl" not in names(data_dir)
    text = archive_text(data_dir / "runs_log" / "2026-08.jsonl.zst")
    assert text.startswith(b"".join(log["2026-08"])) and text.count(b"\n") == 301
    assert sorted(run_ids(data_dir)[0]) == sorted(seen)


def test_a_run_killed_after_its_rename_is_finished_without_doubling_a_line(
    data_dir: Path, log: dict[str, list[bytes]]
) -> None:
    """Killed between the rename and the unlink: archive and shard hold the same rows, plus a
    row logged since. The next run keeps each line once."""
    list(archive_log(data_dir, keep_months=2, now=NOW))
    newer = month_line("2026-09")
    write_shard(data_dir, "2026-09", [*log["2026-09"], newer])  # as if never unlinked
    ids, report = run_ids(data_dir)
    assert report.duplicates == 300 and len(ids) == 1501  # readers keep one per run_id
    (merged,) = archive_log(data_dir, keep_months=2, now=NOW)
    assert (merged.action, merged.lines) == ("merged", 1)
    text = archive_text(data_dir / "runs_log" / "2026-09.jsonl.zst")
    assert text == b"".join(log["2026-09"]) + newer
    ids, report = run_ids(data_dir)
    assert report.duplicates == 0 and len(ids) == 1501


def rolled_back_and_replacing(month: str, same_tail: bool) -> tuple[list[bytes], list[bytes]]:
    """A writer's rows that its failed fsync rolls back, and another writer's in their place:
    fewer, or (`same_tail`) one row of the same length then the same 10 rows (over 4 KiB),
    as when the first writer's client retries its batch behind another client's row."""
    if not same_tail:
        return month_lines(month, 5), month_lines(month, 3)
    tail = month_lines(month, 10)
    first, second = month_line(month, run_id="rolled-back"), month_line(month, run_id="written-ack")
    assert len(first) == len(second) and len(b"".join(tail)) > 4096
    return [first, *tail], [second, *tail]


@pytest.mark.parametrize("same_tail", [False, True], ids=["fewer", "same-tail"])
@pytest.mark.parametrize("merging", [False, True], ids=["archive", "merge"])
def test_rows_rolled_back_and_replaced_while_the_archiver_starts_are_archived_as_the_log_is(
    data_dir: Path, merging: bool, same_tail: bool
) -> None:
    """A writer has written rows and not yet fsynced them when the archiver starts; its fsync
    fails, it rolls them back (the shard truncated) and another writer appends other rows in
    their place: the archive must hold the rows the log holds, never the rolled-back ones."""
    month = "2026-08"
    earlier, kept = month_lines(month, 20), month_lines(month, 50)
    rolled_back, replacing = rolled_back_and_replacing(month, same_tail)
    if merging:
        write_shard(data_dir, month, earlier)
        list(archive_log(data_dir, keep_months=2, now=NOW))
    write_shard(data_dir, month, [*kept, *rolled_back])
    shard = shard_path(data_dir, month)
    writer = os.open(shard, os.O_RDWR | os.O_APPEND)
    results: list[MonthResult] = []
    try:
        fcntl.flock(writer, fcntl.LOCK_EX)  # the writer that is about to roll back
        archiver = threading.Thread(
            target=lambda: results.extend(archive_log(data_dir, keep_months=2, now=NOW))
        )
        archiver.start()
        wait_for_flock_waiter(os.fstat(writer).st_ino, archiver.is_alive)
        os.ftruncate(writer, len(b"".join(kept)))  # the rollback
        os.write(writer, b"".join(replacing))  # another writer's rows, after it
        fcntl.flock(writer, fcntl.LOCK_UN)
        archiver.join(30)
    finally:
        os.close(writer)
    assert [(r.month, r.action) for r in results] == [(month, "merged" if merging else "archived")]
    text = archive_text(data_dir / "runs_log" / f"{month}.jsonl.zst")
    assert text == b"".join([*(earlier if merging else []), *kept, *replacing])


#: Archives the data dir argument (keep 2 months, as of NOW) under an address-space limit of
#: what the interpreter already uses plus the second argument (bytes); prints the results.
CHILD_ARCHIVE_LIMITED = f"""
import datetime as dt, json, sys
from pathlib import Path
import zstandard
from mantisd.archive import archive_log
{LIMIT_ADDRESS_SPACE}
now = dt.datetime(2026, 11, 15, tzinfo=dt.UTC)
results = archive_log(Path(sys.argv[1]), keep_months=2, now=now)
print(json.dumps([(r.action, r.lines) for r in results]))
"""


def test_a_big_month_of_late_rows_is_merged_in_bounded_memory(data_dir: Path) -> None:
    """96 MiB of late rows (1,500 of 64 KiB, 10 of them in the archive already) merged with
    48 MiB of address space more than the interpreter's own: the shard is streamed twice,
    never held (it was held whole, then split: MemoryError)."""
    month = "2026-08"
    big = month_lines(month, 1500, padding="p" * (64 << 10))
    write_shard(data_dir, month, big[:10])
    list(archive_log(data_dir, keep_months=2, now=NOW))
    write_shard(data_dir, month, big)  # as if a run died between its rename and its unlink
    proc = run_limited(CHILD_ARCHIVE_LIMITED, str(data_dir), str(48 << 20))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == [["merged", 1490]]
    assert archive_text(data_dir / "runs_log" / f"{month}.jsonl.zst") == b"".join(big)


def test_a_torn_tail_is_archived_as_its_own_line(data_dir: Path) -> None:
    lines = month_lines("2026-07", 3)
    write_shard(data_dir, "2026-07", lines, end=b'{"schema_version":1,"run_')
    list(archive_log(data_dir, keep_months=1, now=NOW))
    text = archive_text(data_dir / "runs_log" / "2026-07.jsonl.zst")
    assert text == b"".join(lines) + b'{"schema_version":1,"run_\n'
    ids, report = run_ids(data_dir)
    assert len(ids) == 3 and report.bad_lines == 1


def test_a_temporary_file_left_by_a_dead_run_is_ignored_then_removed(
    data_dir: Path, log: dict[str, list[bytes]]
) -> None:
    leftover = data_dir / "runs_log" / ".2026-07.jsonl.zst.0123456789abcdef.tmp"
    leftover.write_bytes(b"half an archive")
    ids, report = run_ids(data_dir)
    assert len(ids) == 1500 and report.bad_lines == 0  # readers never open it
    list(archive_log(data_dir, keep_months=2, now=NOW))
    assert not leftover.exists()


def test_a_link_planted_at_the_archive_name_is_replaced_not_followed(
    data_dir: Path, log: dict[str, list[bytes]], tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    (data_dir / "runs_log" / "2026-07.jsonl.zst").symlink_to(victim)
    list(archive_log(data_dir, keep_months=2, now=NOW))
    archive = data_dir / "runs_log" / "2026-07.jsonl.zst"
    assert not archive.is_symlink() and archive_text(archive) == b"".join(log["2026-07"])
    assert victim.read_bytes() == b"precious\n"


def test_a_damaged_archive_is_never_merged_into(
    data_dir: Path, log: dict[str, list[bytes]]
) -> None:
    list(archive_log(data_dir, keep_months=2, now=NOW))
    archive = data_dir / "runs_log" / "2026-07.jsonl.zst"
    archive.write_bytes(archive.read_bytes()[:-40])  # truncated: its seek table is gone
    write_shard(data_dir, "2026-07", [month_line("2026-07")])
    kept = archive.read_bytes()
    result = invoke("--keep-months", "2", "--data-dir", str(data_dir))
    assert result.exit_code == 1
    assert "skipped 2026-07: 2026-07.jsonl.zst is damaged (truncated): not merged" in result.stderr
    assert archive.read_bytes() == kept and shard_path(data_dir, "2026-07").exists()


def test_retention_deletes_old_months_and_names_every_file(
    data_dir: Path, log: dict[str, list[bytes]]
) -> None:
    list(archive_log(data_dir, keep_months=4, now=NOW))  # 2026-07 archived
    write_shard(data_dir, "2026-07", [month_line("2026-07")])  # and a late row beside it
    result = invoke("--keep-months", "2", "--delete-older-than", "4", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("deleted 2026-07 (older than the newest 4 months): 2026-07.jsonl (")
    assert "2026-07.jsonl.zst (" in lines[0]
    assert lines[1].startswith("archived 2026-08: 2026-08.jsonl (")
    assert not any(name.startswith("2026-07") for name in names(data_dir))


def test_a_dry_run_says_what_it_would_do_and_changes_nothing(
    data_dir: Path, log: dict[str, list[bytes]]
) -> None:
    before = {name: (data_dir / "runs_log" / name).read_bytes() for name in names(data_dir)}
    result = invoke(
        "--keep-months", "3", "--delete-older-than", "4", "--dry-run", "--data-dir", str(data_dir)
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"would delete 2026-07 (older than the newest 4 months): 2026-07.jsonl "
        f"({len(b''.join(log['2026-07'])) / 1000:.1f} KB)",
        f"would archive 2026-08: 2026-08.jsonl ({len(b''.join(log['2026-08'])) / 1000:.1f} KB)",
    ]
    assert {n: (data_dir / "runs_log" / n).read_bytes() for n in names(data_dir)} == before
    assert not (data_dir / LOCK_FILE).exists()


def test_two_archivers_never_work_on_one_data_dir_at_once(
    data_dir: Path, log: dict[str, list[bytes]]
) -> None:
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = invoke("--keep-months", "1", "--data-dir", str(data_dir))
    finally:
        os.close(fd)
    assert result.exit_code == 1
    assert "another `mantis runs archive` is working on" in result.stderr
    assert all(not f.compressed for f in list_log_files(data_dir))


def test_nothing_to_do_is_said(data_dir: Path) -> None:
    result = invoke("--keep-months", "1", "--data-dir", str(data_dir))
    assert (result.exit_code, result.stdout) == (0, f"nothing to do in {data_dir}\n")


@pytest.mark.parametrize(
    "args", [["--keep-months", "0"], ["--keep-months", "1", "--delete-older-than", "0"], []]
)
def test_bad_counts_are_usage_errors(args: list[str], data_dir: Path) -> None:
    assert invoke(*args, "--data-dir", str(data_dir)).exit_code == 2


def test_months_are_counted_back_across_years() -> None:
    assert shift("2026-01", -1) == "2025-12" and shift("2026-11", -13) == "2025-10"
    assert shift("2025-12", 1) == "2026-01"


def test_the_commands_default_level_is_the_archives() -> None:
    from mantisd import compressed
    from mantisd.cli.archive import LEVEL

    assert LEVEL == compressed.LEVEL


def test_a_higher_level_writes_a_smaller_archive_that_reads_the_same(tmp_path: Path) -> None:
    sizes = []
    for level in ("1", "19"):
        data_dir = tmp_path / level
        generate(data_dir, rows=3000, months=2, seed=4, end=dt.datetime(2026, 11, 1))
        plain = shard_path(data_dir, "2026-09").read_bytes()
        result = invoke("--keep-months", "2", "--level", level, "--data-dir", str(data_dir))
        assert result.exit_code == 0, result.output
        archive = data_dir / "runs_log" / "2026-09.jsonl.zst"
        assert archive_text(archive) == plain
        sizes.append(archive.stat().st_size)
    assert sizes[1] < sizes[0] * 0.9


def test_only_readers_of_archives_load_zstandard_and_nothing_loads_duckdb(
    data_dir: Path, log: dict[str, list[bytes]]
) -> None:
    """The runtime's client, the daemon and `mantis --help` never pay for zstandard or DuckDB;
    a query loads zstandard only when it meets an archive."""
    import json

    def loaded(code: str) -> set[str]:
        code += "\nimport json, sys; print(json.dumps(sorted(sys.modules)), file=sys.__stderr__)"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        return {name.partition(".")[0] for name in json.loads(proc.stderr.splitlines()[-1])}

    query = (
        "from mantisd.cli import mantis\n"
        "try:\n"
        f"    mantis(['runs', 'stats', 'x', '--data-dir', {str(data_dir)!r}])\n"
        "except SystemExit:\n"
        "    pass"
    )
    heavy = {"zstandard", "duckdb", "chdb"}
    assert not loaded("import mantis_client, mantisd.daemon.server") & heavy
    assert not loaded("import mantisd.cli") & heavy
    assert not loaded(query) & heavy  # plain shards only
    list(archive_log(data_dir, keep_months=1, now=NOW))
    assert loaded(query) & heavy == {"zstandard"}


def test_a_runs_log_given_as_the_data_dir_is_a_usage_error(
    data_dir: Path, log: dict[str, list[bytes]]
) -> None:
    result = invoke("--keep-months", "1", "--data-dir", str(data_dir / "runs_log"))
    assert result.exit_code == 2 and f"--data-dir {data_dir}" in result.stderr
    assert invoke("--keep-months", "1", "--data-dir", str(data_dir / "nope")).exit_code == 1
