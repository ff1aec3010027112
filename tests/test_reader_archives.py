"""Readers read archived months (`<YYYY-MM>.jsonl.zst`, `.gz`) as they read shards.

Archives written by `mantis runs archive`, by `zstd` without a seek table, and by `gzip`
(one member or several) all read newest first, in the log's order; a month's plain shard
(late rows) before its archive. A truncated or corrupt archive is reported and skipped,
never raised; a month archived while a reader lists the log is still read whole.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner

from mantisd.archive import archive_log
from mantisd.cli import mantis
from mantisd.compressed import FRAME_BYTES
from mantisd.reader import CheckedRow, Scanner, ScanReport, _memory_windows, iter_windows
from tests.fleet import month_line, month_lines
from tests.stats_data import line, write_shard

LATER = dt.datetime(2027, 6, 1, tzinfo=dt.UTC)
WF = "default__marketplace-listings-v1"


def scan(data_dir: Path) -> tuple[list[str], ScanReport]:
    report = ScanReport()
    return [row.run_id for row in Scanner(CheckedRow).scan(data_dir, report)], report


def ids_of(lines: list[bytes]) -> list[str]:
    return [json.loads(raw)["run_id"] for raw in lines]


@pytest.fixture
def big_month(data_dir: Path) -> list[bytes]:
    """A month of several 1 MiB frames once archived."""
    lines = month_lines("2026-03", 4000)
    assert len(b"".join(lines)) > 2 * FRAME_BYTES
    write_shard(data_dir, "2026-03", lines)
    write_shard(data_dir, "2026-04", APRIL)
    return lines


APRIL = month_lines("2026-04", 10)


def archive_by_hand(data_dir: Path, month: str, kind: str, *, members: int = 1) -> Path:
    """Compress a shard the way an operator might: `gzip` (in `members` pieces) or `zstd`."""
    shard = data_dir / "runs_log" / f"{month}.jsonl"
    data = shard.read_bytes()
    cut = len(data) // members
    pieces = [data[i * cut : (i + 1) * cut if i < members - 1 else None] for i in range(members)]
    if kind == "gz":
        blob = b"".join(gzip.compress(piece) for piece in pieces)
    else:
        blob = b"".join(zstandard.ZstdCompressor().compress(piece) for piece in pieces)
    target = shard.with_name(f"{shard.name}.{kind}")
    target.write_bytes(blob)
    shard.unlink()
    return target


def test_an_archive_reads_in_the_same_order_as_its_shard(
    data_dir: Path, big_month: list[bytes]
) -> None:
    before, _ = scan(data_dir)
    list(archive_log(data_dir, keep_months=1, now=LATER))
    after, report = scan(data_dir)
    assert after == before and report.shards_read == 2 and not report.summary()


@pytest.mark.parametrize(("kind", "members"), [("gz", 1), ("gz", 3), ("zst", 1), ("zst", 2)])
def test_archives_made_by_hand_are_read_too(
    data_dir: Path, big_month: list[bytes], kind: str, members: int
) -> None:
    before, _ = scan(data_dir)
    archive_by_hand(data_dir, "2026-03", kind, members=members)
    after, report = scan(data_dir)
    assert after == before and not report.summary()


def test_last_n_reads_only_the_newest_frames(data_dir: Path, big_month: list[bytes]) -> None:
    list(archive_log(data_dir, keep_months=1, now=LATER))
    args = ["runs", "stats", WF, "--last", "5", "--json", "--data-dir", str(data_dir)]
    result = CliRunner(env={"MANTIS_DATA_DIR": None}).invoke(mantis, args)
    assert result.exit_code == 0 and json.loads(result.stdout)["run_count"] == 5


def test_late_rows_beside_an_archive_are_read_first(data_dir: Path, big_month: list[bytes]) -> None:
    list(archive_log(data_dir, keep_months=1, now=LATER))
    late = [month_line("2026-03") for _ in range(3)]
    write_shard(data_dir, "2026-03", [*late, big_month[-1]])  # and one row logged twice
    ids, report = scan(data_dir)
    newest_first = ids_of(APRIL)[::-1] + ids_of([big_month[-1]]) + ids_of(late)[::-1]
    assert ids[:14] == newest_first
    assert len(ids) == 4013 and report.duplicates == 1


@pytest.mark.parametrize("kind", ["ours", "zst", "gz"])
def test_a_truncated_archive_is_reported_and_skipped(
    data_dir: Path, big_month: list[bytes], kind: str
) -> None:
    if kind == "ours":
        list(archive_log(data_dir, keep_months=1, now=LATER))
        path = data_dir / "runs_log" / "2026-03.jsonl.zst"
    else:
        path = archive_by_hand(data_dir, "2026-03", kind)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    ids, report = scan(data_dir)
    assert len(ids) == 10  # April's rows; nothing of the damaged month
    assert report.damaged == [f"{path.name}: truncated"]
    args = ["runs", "stats", WF, "--last", "100000", "--status", "", "--data-dir", str(data_dir)]
    result = CliRunner(env={"MANTIS_DATA_DIR": None}).invoke(mantis, args)
    assert result.exit_code == 0, result.output
    assert (
        f"warning: skipped 1 damaged archive(s), from the damage on ({path.name}: truncated)"
        in (result.stderr)
    )
    assert "Across last 10 runs" in result.stdout


def test_a_corrupt_frame_skips_that_frame_and_older_ones(
    data_dir: Path, big_month: list[bytes]
) -> None:
    """The newer frames' rows checked out (each frame has its own checksum): they are kept."""
    list(archive_log(data_dir, keep_months=1, now=LATER))
    path = data_dir / "runs_log" / "2026-03.jsonl.zst"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # inside the first frame
    path.write_bytes(bytes(data))
    ids, report = scan(data_dir)
    (damage,) = report.damaged
    assert damage.startswith("2026-03.jsonl.zst: frame 1 of ")
    assert 10 < len(ids) < 4010 and ids[10] == ids_of(big_month)[-1]


def test_an_archive_that_is_not_compressed_at_all_is_damaged(data_dir: Path) -> None:
    write_shard(data_dir, "2026-04", month_lines("2026-04", 2))
    (data_dir / "runs_log" / "2026-03.jsonl.gz").write_bytes(b"".join(month_lines("2026-03", 2)))
    (data_dir / "runs_log" / "2026-02.jsonl.zst").write_bytes(b"")
    ids, report = scan(data_dir)
    assert len(ids) == 2 and len(report.damaged) == 2
    assert report.damaged[1] == "2026-02.jsonl.zst: empty: not a compressed file"


def test_an_over_long_line_in_an_archive_is_skipped_and_counted(data_dir: Path) -> None:
    lines = month_lines("2026-03", 3)
    write_shard(data_dir, "2026-03", [lines[0], b"x" * 70_000 + b"\n", *lines[1:]])
    list(archive_log(data_dir, keep_months=1, now=LATER))
    ids, report = scan(data_dir)
    assert ids == ids_of(lines)[::-1] and report.bad_lines == 1


def test_a_month_archived_while_the_reader_lists_the_log_is_read_whole(
    data_dir: Path, big_month: list[bytes]
) -> None:
    """Listed as a plain shard, archived (and the shard unlinked) before it is opened: the
    reader finds the archive that now holds its rows."""
    report = ScanReport()

    def archive_now(index: int, count: int, month: str) -> None:
        if month == "2026-03":
            list(archive_log(data_dir, keep_months=1, now=LATER))

    ids = [r.run_id for r in Scanner(CheckedRow).scan(data_dir, report, on_shard=archive_now)]
    assert sorted(ids) == sorted(ids_of(big_month) + ids_of(APRIL))
    assert not report.summary()


def test_a_link_named_like_an_archive_is_not_read(data_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.gz"
    secret.write_bytes(gzip.compress(line(run_id="secret-run")))
    write_shard(data_dir, "2026-04", month_lines("2026-04", 1))
    (data_dir / "runs_log" / "2026-03.jsonl.gz").symlink_to(secret)
    ids, report = scan(data_dir)
    assert "secret-run" not in ids and len(ids) == 1


def test_frames_are_cut_into_lines_exactly_as_files_are(tmp_path: Path) -> None:
    """In memory (a frame) and on disk, the same bytes give the same lines, the same
    over-long lines skipped: random lines around the limit, empty lines, torn ends."""
    rng = random.Random(1)
    path = tmp_path / "lines"
    for _ in range(2000):
        lengths = [
            rng.choice([0, 1, 5, 30, 63, 64, 65, 100, 200]) for _ in range(rng.randint(0, 12))
        ]
        data = b"\n".join(b"x" * n for n in lengths) + (b"\n" if rng.random() < 0.7 else b"")
        data = b"\n" + data if rng.random() < 0.2 else data
        path.write_bytes(data)
        in_memory, on_disk = ScanReport(), ScanReport()
        got = [
            line
            for buffer, start, end in _memory_windows(data, in_memory, 64)
            for line in reversed(bytes(buffer[start:end]).split(b"\n"))
        ]
        want = [
            line
            for buffer, start, end in iter_windows(path, 70, on_disk, max_line=64)
            for line in reversed(bytes(buffer[start:end]).split(b"\n"))
        ]
        assert (got, in_memory.bad_lines) == (want, on_disk.bad_lines), data
