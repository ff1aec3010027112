"""Dead letters of `mantis runs ship`, for real (real files, a real PostgreSQL): at most 64 KiB
of a bad line is kept, and a bad line is dead-lettered once per month, whichever of the
month's files (its shard, its archive) hold it, whatever `mantis runs archive` did in between.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mantisd.fleet.shard_file import KEEP_BYTES
from mantisd.paths import shard_path
from tests.fleet import archive, line_ids, month_lines, rows, run_ids, ship, shipped
from tests.stats_data import write_shard

TORN = b'{"run_id": "torn-row", "sche\n'
NOT_A_ROW = b'{"not": "a row"}\n'


def letters(url: str) -> list[tuple[str, int, bytes]]:
    """Every dead letter: its file, offset and raw bytes, in order."""
    found = rows(
        url, "SELECT shard, byte_offset, raw FROM mantis.dead_letters ORDER BY shard, byte_offset"
    )
    return [(shard, offset, bytes(raw)) for shard, offset, raw in found]


def names(data_dir: Path) -> list[str]:
    return sorted(path.name for path in (data_dir / "runs_log").iterdir())


def test_a_bad_line_shorter_than_a_batch_keeps_its_first_64_kib_and_its_length(
    pg_url: str, data_dir: Path
) -> None:
    junk = b"x" * (3 << 20)  # 3 MiB: far below a batch, far above what is kept
    good = month_lines("2026-01", 2)
    write_shard(data_dir, "2026-01", [good[0], junk + b"\n", good[1]])
    assert shipped(ship(pg_url, data_dir))["total"] == (2, 0, 1)
    ((offset, raw, length, digest),) = rows(
        pg_url, "SELECT byte_offset, raw, raw_length, raw_sha256 FROM mantis.dead_letters"
    )
    assert offset == len(good[0])
    assert bytes(raw) == junk[:KEEP_BYTES] and KEEP_BYTES == 64 * 1024
    assert length == len(junk)
    assert bytes(digest) == hashlib.sha256(junk).digest()  # of the whole line, not of `raw`
    assert run_ids(pg_url) == line_ids(good)


def test_late_bad_lines_merged_into_the_archive_are_not_dead_lettered_again(
    pg_url: str, data_dir: Path
) -> None:
    """Late rows with bad lines are shipped from the month's new shard, then merged into its
    archive at other offsets: the archive's copies are the same lines."""
    first = month_lines("2026-01", 3)
    write_shard(data_dir, "2026-01", [first[0], TORN, *first[1:]])
    assert shipped(ship(pg_url, data_dir))["total"] == (3, 0, 1)
    archive(data_dir, before="2026-03")
    assert names(data_dir) == ["2026-01.jsonl.zst"]
    late = month_lines("2026-01", 3)  # the same bad bytes twice: two lines of their own
    write_shard(data_dir, "2026-01", [late[0], NOT_A_ROW, late[1], NOT_A_ROW, late[2]])
    assert shipped(ship(pg_url, data_dir)) == {"2026-01.jsonl": (3, 0, 2), "total": (3, 0, 2)}
    assert [r.action for r in archive(data_dir, before="2026-03")] == ["merged"]
    assert names(data_dir) == ["2026-01.jsonl.zst"]
    assert shipped(ship(pg_url, data_dir)) == {
        "2026-01.jsonl.zst": (0, 3, 0),
        "total": (0, 3, 0),
    }
    shard_letters = letters(pg_url)
    assert [(shard, raw) for shard, _, raw in shard_letters] == [
        ("2026-01.jsonl", TORN[:-1]),
        ("2026-01.jsonl", NOT_A_ROW[:-1]),
        ("2026-01.jsonl", NOT_A_ROW[:-1]),
    ]
    assert run_ids(pg_url) == line_ids(first + late)
    assert "nothing new to ship" in ship(pg_url, data_dir).stdout


def test_a_shard_left_beside_its_archive_does_not_dead_letter_its_lines_again(
    pg_url: str, data_dir: Path
) -> None:
    """`mantis runs archive` died between its rename and its unlink: the shard is still there,
    beside the archive holding the same lines (at the same offsets). The archive is shipped
    first, then the shard: its bad line is the archive's."""
    lines = month_lines("2026-01", 4)
    path = write_shard(data_dir, "2026-01", [*lines[:2], b"garbage\n", *lines[2:]])
    content = path.read_bytes()
    archive(data_dir, before="2026-03")
    path.write_bytes(content)  # the shard the archiver did not get to unlink
    assert names(data_dir) == ["2026-01.jsonl", "2026-01.jsonl.zst"]
    assert shipped(ship(pg_url, data_dir)) == {
        "2026-01.jsonl.zst": (4, 0, 1),
        "2026-01.jsonl": (0, 4, 0),
        "total": (4, 4, 1),
    }
    assert letters(pg_url) == [("2026-01.jsonl.zst", len(b"".join(lines[:2])), b"garbage")]
    archive(data_dir, before="2026-03")  # the next run finishes the job
    assert names(data_dir) == ["2026-01.jsonl.zst"]
    assert "nothing new to ship" in ship(pg_url, data_dir).stdout
    assert len(letters(pg_url)) == 1


def test_a_shard_left_beside_an_archive_it_was_merged_into_does_not_dead_letter_again(
    pg_url: str, data_dir: Path
) -> None:
    """The same with late rows: the archiver merged the shard into the month's archive (after
    the old archive's lines, at other offsets) and died before its unlink."""
    first = month_lines("2026-01", 3)
    write_shard(data_dir, "2026-01", first)
    archive(data_dir, before="2026-03")
    assert shipped(ship(pg_url, data_dir))["total"] == (3, 0, 0)
    late = month_lines("2026-01", 2)
    path = write_shard(data_dir, "2026-01", [late[0], NOT_A_ROW, late[1]])
    content = path.read_bytes()
    assert [r.action for r in archive(data_dir, before="2026-03")] == ["merged"]
    path.write_bytes(content)
    assert shipped(ship(pg_url, data_dir)) == {
        "2026-01.jsonl.zst": (2, 0, 1),
        "2026-01.jsonl": (0, 2, 0),
        "total": (2, 2, 1),
    }
    assert [(shard, raw) for shard, _, raw in letters(pg_url)] == [
        ("2026-01.jsonl.zst", NOT_A_ROW[:-1])
    ]
    assert run_ids(pg_url) == line_ids(first + late)


def test_the_same_bad_bytes_again_in_a_file_are_another_line(pg_url: str, data_dir: Path) -> None:
    """Within one file's content the same bad bytes at another offset are another bad line,
    also when an archive goes on from where its shard's cursor stopped: each one is
    dead-lettered once (not taken for the first one, dead-lettered under the shard's name)."""
    lines = month_lines("2026-01", 6)
    path = write_shard(data_dir, "2026-01", [lines[0], TORN, lines[1]])
    assert shipped(ship(pg_url, data_dir))["total"] == (2, 0, 1)
    write_shard(data_dir, "2026-01", [lines[2], TORN, lines[3], TORN, *lines[4:]])
    content = path.read_bytes()
    archive(data_dir, before="2026-03")  # before the shipper saw the two new ones
    assert shipped(ship(pg_url, data_dir)) == {
        "2026-01.jsonl.zst": (4, 0, 2),
        "total": (4, 0, 2),
    }
    at = [i for i in range(len(content)) if content.startswith(TORN, i)]
    assert letters(pg_url) == [
        ("2026-01.jsonl", at[0], TORN[:-1]),
        ("2026-01.jsonl.zst", at[1], TORN[:-1]),
        ("2026-01.jsonl.zst", at[2], TORN[:-1]),
    ]
    shard_path(data_dir, "2026-01").write_bytes(content)  # the same lines, again beside it
    loaded, _, dead = shipped(ship(pg_url, data_dir))["total"]
    assert (loaded, dead) == (0, 0)
    assert len(letters(pg_url)) == 3
