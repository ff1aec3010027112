"""Reading the log (`mantisd.reader`) through its public API, on real files."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mantisd.paths import shard_path
from mantisd.reader import (
    BLOCK_SIZE,
    MAX_LINE_BYTES,
    KeyedRow,
    Scanner,
    ScanReport,
    StatRow,
    iter_line_blocks,
    iter_windows,
    json_needle,
)
from mantisd.schema import validate
from tests.proc import LIMIT_ADDRESS_SPACE, run_limited
from tests.rows import make_row


def line(month: str = "2026-01", **overrides: Any) -> bytes:
    """The stored line of a valid row that finished in `month`."""
    times = {"created_at": f"{month}-10T11:00:00Z", "finished_at": f"{month}-10T12:00:00Z"}
    return validate(make_row(**(times | overrides))).line


def run_id(stored: bytes) -> str:
    return validate(stored).run_id


def write_shard(data_dir: Path, month: str, content: bytes) -> Path:
    path = shard_path(data_dir, month)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def scan(data_dir: Path, **kwargs: Any) -> tuple[list[Any], ScanReport]:
    report = ScanReport()
    return list(Scanner(StatRow).scan(data_dir, report, **kwargs)), report


def ids(rows: list[Any]) -> list[str]:
    return [row.run_id for row in rows]


# --- order -------------------------------------------------------------------------------------


def test_newest_month_first_and_later_lines_first(data_dir: Path) -> None:
    lines = {month: [line(month) for _ in range(3)] for month in ("2025-12", "2026-02", "2026-01")}
    for month, month_lines in lines.items():
        write_shard(data_dir, month, b"".join(month_lines))
    rows, report = scan(data_dir)
    expected = [run_id(x) for m in ("2026-02", "2026-01", "2025-12") for x in reversed(lines[m])]
    assert ids(rows) == expected
    assert report == ScanReport(bad_lines=0, duplicates=0, shards_read=3)
    assert report.summary() is None


def test_rows_are_stat_rows_with_validated_fields(data_dir: Path) -> None:
    stored = line(workflow_id="wf", status="failed", total_time_s=12.5)
    write_shard(data_dir, "2026-01", stored)
    (row,), _ = scan(data_dir)
    assert isinstance(row, StatRow)
    assert (row.workflow_id, row.status, row.total_time_s) == ("wf", "failed", 12.5)
    assert row.finished_at.isoformat() == "2026-01-10T12:00:00+00:00"
    assert row.wall_time_breakdown == json.loads(stored)["wall_time_breakdown"]


def test_an_empty_or_missing_log(data_dir: Path) -> None:
    assert scan(data_dir) == ([], ScanReport())
    write_shard(data_dir, "2026-01", b"")
    assert scan(data_dir) == ([], ScanReport(shards_read=1))


# --- bad lines ---------------------------------------------------------------------------------

BAD_LINES = [
    b"",  # blank
    b"   \t",  # whitespace only
    b"not json at all",
    b"[1, 2, 3]",  # a JSON array
    b'"a string"',
    b"null",
    b"{}",  # an object without the fields
    b'{"run_id": 5}',  # wrong type
    line().replace(b'"status":"succeeded"', b'"status":"paused"').rstrip(),  # not terminal
    line(total_time_s=1.0).replace(b'"total_time_s":1.0', b'"total_time_s":-1.0').rstrip(),
    line(total_time_s=1.0).replace(b'"total_time_s":1.0', b'"total_time_s":"1.0"').rstrip(),
    line().replace(b"Z", b"").rstrip(),  # timestamps without a zone
    line()[:-2] + b",}",  # a trailing comma
    line().rstrip() + line().rstrip(),  # two rows glued together
    b"\xff\xfe not utf-8",
]


def test_bad_lines_are_skipped_and_counted(data_dir: Path) -> None:
    good = [line() for _ in range(4)]
    torn = line()[:40]  # the last line, cut by a crash: no `\n`
    content = good[0] + b"\n".join(BAD_LINES[:8]) + b"\n" + good[1] + good[2]
    content += b"\n".join(BAD_LINES[8:]) + b"\n" + good[3] + torn
    write_shard(data_dir, "2026-01", content)
    rows, report = scan(data_dir)
    assert ids(rows) == [run_id(x) for x in reversed(good)]
    assert report.bad_lines == len(BAD_LINES) + 1
    assert report.summary() == f"skipped {len(BAD_LINES) + 1} unreadable line(s)"


def test_a_whole_last_line_without_newline_is_read(data_dir: Path) -> None:
    first, last = line(), line()
    write_shard(data_dir, "2026-01", first + last.rstrip(b"\n"))
    rows, report = scan(data_dir)
    assert ids(rows) == [run_id(last), run_id(first)]
    assert report.bad_lines == 0


def test_crlf_and_padded_lines_are_still_rows(data_dir: Path) -> None:
    """JSON allows whitespace around a value: a line edited on another OS still reads."""
    a, b = line(), line()
    write_shard(data_dir, "2026-01", a.rstrip() + b"\r\n  " + b)
    rows, report = scan(data_dir)
    assert ids(rows) == [run_id(b), run_id(a)] and report.bad_lines == 0


# --- duplicates --------------------------------------------------------------------------------


def test_duplicate_run_id_keeps_the_newest(data_dir: Path) -> None:
    def dup(month: str, total: float) -> bytes:
        return line(month, run_id="run-dup", total_time_s=total)

    other = line("2026-02")
    write_shard(data_dir, "2026-01", dup("2026-01", 1.0) + line() + dup("2026-01", 2.0))
    write_shard(data_dir, "2026-02", dup("2026-02", 3.0) + other + dup("2026-02", 4.0))
    rows, report = scan(data_dir)
    assert [(r.run_id, r.total_time_s) for r in rows if r.run_id == "run-dup"] == [("run-dup", 4.0)]
    assert ids(rows)[:2] == ["run-dup", run_id(other)]
    assert len(rows) == 3
    assert report.duplicates == 3
    assert report.summary() == "dropped 3 duplicate run_id(s)"


def test_a_duplicate_after_a_bad_copy_is_kept_once(data_dir: Path) -> None:
    """A torn copy of a row does not count as the row: the whole older copy is used."""
    whole = line(run_id="run-x")
    write_shard(data_dir, "2026-01", whole + whole[:30] + b"\n")
    rows, report = scan(data_dir)
    assert ids(rows) == ["run-x"]
    assert (report.bad_lines, report.duplicates) == (1, 0)


# --- iter_line_blocks --------------------------------------------------------------------------


def expected_lines_reversed(content: bytes) -> list[bytes]:
    lines = content.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the final `\n` ends the last line
    return lines[::-1]


def test_iter_line_blocks_returns_every_line_in_reverse(tmp_path: Path) -> None:
    """Property-style: random files, tiny and odd block sizes, fixed seed."""
    rng = random.Random(20260513)
    alphabet = b'ab{}[]",:\\ \r\t\xc3\xa9\xff'
    path = tmp_path / "lines"
    for case in range(400):
        lines = [
            bytes(rng.choice(alphabet) for _ in range(rng.choice((0, 1, 2, 5, 7, 8, 30))))
            for _ in range(rng.randrange(0, 15))
        ]
        content = b"\n".join(lines) + (b"\n" if lines and rng.random() < 0.7 else b"")
        path.write_bytes(content)
        for block_size in (1, 2, 7, 8, 64, 1 << 20):
            blocks = list(iter_line_blocks(path, block_size))
            got = [x for block in blocks for x in block]
            assert got == expected_lines_reversed(content), (case, block_size, content)
            assert all(blocks), "no empty blocks"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", []),
        (b"\n", [b""]),
        (b"\n\n", [b"", b""]),
        (b"a", [b"a"]),
        (b"a\n", [b"a"]),
        (b"a\nb", [b"b", b"a"]),
        (b"a\n\nb\n", [b"b", b"", b"a"]),
    ],
)
def test_iter_line_blocks_edges(tmp_path: Path, content: bytes, expected: list[bytes]) -> None:
    path = tmp_path / "lines"
    path.write_bytes(content)
    for block_size in (1, 7, 1 << 20):
        assert [x for b in iter_line_blocks(path, block_size) for x in b] == expected


def test_iter_line_blocks_sizes_blocks_by_bytes(tmp_path: Path) -> None:
    path = tmp_path / "lines"
    path.write_bytes(b"".join(b"%05d\n" % i for i in range(1000)))  # 6-byte lines
    blocks = list(iter_line_blocks(path, 600))
    assert len(blocks) in (10, 11)
    assert max(len(b) for b in blocks) <= 101
    assert blocks[0][0] == b"00999" and blocks[-1][-1] == b"00000"


def test_iter_line_blocks_ignores_what_is_appended_after_opening(tmp_path: Path) -> None:
    path = tmp_path / "lines"
    path.write_bytes(b"one\ntwo\nthree\n")
    blocks = iter_line_blocks(path, 7)
    first = next(blocks)
    with open(path, "ab") as f:
        f.write(b"four\nfive\n")
    assert [x for b in [first, *blocks] for x in b] == [b"three", b"two", b"one"]


# --- prefilter ---------------------------------------------------------------------------------


def test_prefilter_decodes_only_candidate_lines(data_dir: Path) -> None:
    wanted = [line(workflow_id="wf-a") for _ in range(3)]
    others = [line(workflow_id="wf-b") for _ in range(3)]
    escaped = line(workflow_id="wf-a").replace(b'"wf-a"', b'"wf-\\u0061"')  # same value
    with_backslash = line(workflow_id="wf-b", error="C:\\runs\\x")  # may spell the needle
    broken_candidate = b'{"workflow_id":"wf-a"}'  # holds the needle but is not a row
    not_an_object = b"garbage"  # shape check only: counted
    other_object = b'{"workflow_id":"wf-b"}'  # shaped like an object: not decoded, not counted
    content = b"".join(
        [
            wanted[0],
            others[0],
            escaped,
            not_an_object + b"\n",
            wanted[1],
            others[1],
            with_backslash,
            broken_candidate + b"\n",
            other_object + b"\n",
            others[2],
            wanted[2],
        ]
    )
    write_shard(data_dir, "2026-01", content)
    rows, report = scan(data_dir, prefilter=json_needle("wf-a"))
    expected = [wanted[2], with_backslash, wanted[1], escaped, wanted[0]]
    assert ids(rows) == [run_id(x) for x in expected]
    assert {r.workflow_id for r in rows} == {"wf-a", "wf-b"}, "the caller still filters"
    assert report.bad_lines == 2  # `broken_candidate` (decoded) and `not_an_object`
    all_rows, full_report = scan(data_dir)
    assert len(all_rows) == 8 and full_report.bad_lines == 3


def test_json_needle_is_the_json_spelling() -> None:
    assert json_needle("wf-a") == b'"wf-a"'
    assert json_needle('we"ird\\') == b'"we\\"ird\\\\"'
    assert json_needle("modèle") == '"modèle"'.encode()


# --- month pruning -----------------------------------------------------------------------------

#: Scans inside the bounds given as arguments, then without bounds: prints what happened.
CHILD_SCAN = """
import json, sys
from pathlib import Path
from mantisd.reader import ScanReport, Scanner, StatRow
data_dir, oldest, newest = Path(sys.argv[1]), sys.argv[2] or None, sys.argv[3] or None
report, months = ScanReport(), []
rows = Scanner(StatRow).scan(
    data_dir, report, oldest_month=oldest, newest_month=newest,
    on_shard=lambda index, total, month: months.append([index, total, month]),
)
result = {"run_ids": [row.run_id for row in rows], "months": months, "read": report.shards_read}
try:
    list(Scanner(StatRow).scan(data_dir, ScanReport()))
except OSError as exc:
    result["unbounded"] = type(exc).__name__
print(json.dumps(result))
"""


def scan_as_another_user(data_dir: Path, oldest: str, newest: str) -> dict[str, Any]:
    """Root reads anything: demote the scanning process to `nobody` so chmod 000 bites."""
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    proc = subprocess.run(
        [*(prefix if os.geteuid() == 0 else []), sys.executable, "-c", CHILD_SCAN]
        + [str(data_dir), oldest, newest],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.mark.parametrize(
    ("oldest", "newest", "months"),
    [
        ("2026-02", "2026-03", ["2026-03", "2026-02"]),
        ("2026-02", "2026-02", ["2026-02"]),
        ("2026-03", "", ["2026-04", "2026-03"]),
        ("", "2026-02", ["2026-02", "2026-01"]),
    ],
)
def test_months_outside_the_bounds_are_never_opened(
    traversable_dir: Path, oldest: str, newest: str, months: list[str]
) -> None:
    data_dir = traversable_dir / "data"
    all_months = ["2026-01", "2026-02", "2026-03", "2026-04"]
    lines = {m: line(m) for m in all_months}
    for month in all_months:
        path = write_shard(data_dir, month, lines[month])
        path.chmod(0o644 if month in months else 0o000)  # opening one of these would fail
    for directory in (data_dir, data_dir / "runs_log"):
        directory.chmod(0o755)
    result = scan_as_another_user(data_dir, oldest, newest)
    assert result["run_ids"] == [run_id(lines[m]) for m in months]
    assert result["months"] == [[i, len(months), m] for i, m in enumerate(months)]
    assert result["read"] == len(months)
    assert result["unbounded"] == "PermissionError", "the trap shards really are unreadable"


def test_a_shard_archived_during_a_scan_is_skipped(data_dir: Path) -> None:
    """Old months may be moved away at any time, also between listing and reading."""
    lines = {m: line(m) for m in ("2026-01", "2026-02", "2026-03")}
    for month, stored in lines.items():
        write_shard(data_dir, month, stored)

    def archive_next(index: int, total: int, month: str) -> None:
        if month == "2026-02":
            shard_path(data_dir, month).rename(data_dir / "archived.jsonl")

    report = ScanReport()
    rows = list(Scanner(StatRow).scan(data_dir, report, on_shard=archive_next))
    assert ids(rows) == [run_id(lines["2026-03"]), run_id(lines["2026-01"])]
    assert report.bad_lines == 0


def test_the_scan_is_lazy(data_dir: Path) -> None:
    """Taking the first rows of the newest shard does not read older shards."""
    write_shard(data_dir, "2026-02", line("2026-02"))
    write_shard(data_dir, "2026-01", line("2026-01"))
    report = ScanReport()
    rows = Scanner(StatRow).scan(data_dir, report)
    next(rows)
    assert report.shards_read == 1


class IdOnly(KeyedRow):
    """The leanest reader struct: nothing but `run_id`."""


def test_a_reader_struct_decodes_only_what_it_names(data_dir: Path) -> None:
    """Rows are decoded into the caller's struct: other fields may be anything at all."""
    write_shard(data_dir, "2026-01", b'{"run_id":"only-id","status":"paused","x":[1]}\n')
    report = ScanReport()
    assert [r.run_id for r in Scanner(IdOnly).scan(data_dir, report)] == ["only-id"]
    assert report.bad_lines == 0
    assert scan(data_dir)[1].bad_lines == 1, "but a StatRow scan rejects that line"


def test_non_json_bytes_in_a_block_do_not_hide_good_rows(data_dir: Path) -> None:
    """A block with one bad line falls back to line by line: its good rows still count."""
    good = [line() for _ in range(50)]
    content = b"".join(good[:25]) + b"\x00\x01garbage\n" + b"".join(good[25:])
    write_shard(data_dir, "2026-01", content)
    rows, report = scan(data_dir)
    assert ids(rows) == [run_id(x) for x in reversed(good)]
    assert report.bad_lines == 1


def test_a_shard_larger_than_a_read_block(data_dir: Path) -> None:
    """Several 1 MiB blocks: lines cut by block edges, duplicates and bad lines across blocks."""
    template = line(run_id="run-template")
    wf_b = template.replace(b'"default__marketplace-listings-v1"', b'"wf-b"')
    stored, expected, bad = [], [], 0
    for i in range(4000):
        key = f"r{i % 3700:06d}"  # the last 300 rows repeat earlier run_ids
        base = wf_b if i % 2 else template
        stored.append(base.replace(b'"run-template"', f'"{key}"'.encode()))
        if i % 997 == 0:
            stored.append(b'{"torn":\n')
            bad += 1
    newest_first = [validate(x) for x in reversed(stored) if x != b'{"torn":\n']
    seen: set[str] = set()
    for row in newest_first:
        if row.run_id not in seen:
            seen.add(row.run_id)
            expected.append(row)
    write_shard(data_dir, "2026-01", b"".join(stored))
    assert shard_path(data_dir, "2026-01").stat().st_size > 2 << 20

    rows, report = scan(data_dir)
    assert ids(rows) == [r.run_id for r in expected]
    assert (report.bad_lines, report.duplicates) == (bad, 300)

    needle = json_needle("wf-b")
    rows, report = scan(data_dir, prefilter=needle)
    wanted = [r.run_id for r in expected if r.row.workflow_id == "wf-b"]
    assert [r.run_id for r in rows if r.workflow_id == "wf-b"] == wanted
    assert report.bad_lines == bad


# --- files truncated while they are read (a writer's rollback) ----------------------------------


def test_a_file_truncated_between_windows_is_read_on_from_its_new_end(tmp_path: Path) -> None:
    """A writer that cannot make its rows durable truncates the file back to the size it had
    before them: the lines before that are still there, and a reader must not drop them."""
    path = tmp_path / "lines"
    kept = [b"%05d" % i for i in range(200)]  # 6-byte lines: many windows of 64 bytes
    kept_size = len(b"".join(x + b"\n" for x in kept))
    rolled_back = [b"rolled-back-%03d" % i for i in range(40)]
    path.write_bytes(b"".join(x + b"\n" for x in kept + rolled_back))
    blocks = iter_line_blocks(path, 64)
    first = next(blocks)
    assert first[0] == rolled_back[-1]  # read before the rollback: those were there then
    os.truncate(path, kept_size)
    rest = [x for block in blocks for x in block]
    seen_kept = [x for x in first + rest if not x.startswith(b"rolled-back-")]
    assert seen_kept == kept[::-1], "every line before the rollback point, each once"


def test_a_scan_keeps_every_row_when_the_shard_is_rolled_back_under_it(data_dir: Path) -> None:
    """The whole scan path (`mantis runs stats` reads this way): a rollback between two 1 MiB
    windows once made a scan end the shard there, silently."""
    rows = [line() for _ in range(4000)]
    shard = write_shard(data_dir, "2026-01", b"".join(rows))
    acknowledged = shard.stat().st_size
    batch = [line() for _ in range(3000)]  # a big batch, written but not yet fsynced...
    with open(shard, "ab") as f:
        f.write(b"".join(batch))
    assert acknowledged > 2 * BLOCK_SIZE and shard.stat().st_size - acknowledged > BLOCK_SIZE
    report = ScanReport()
    blocks = Scanner(StatRow).scan_blocks(data_dir, report)
    first = next(blocks)
    assert {row.run_id for row in first} <= {run_id(x) for x in batch}
    os.truncate(shard, acknowledged)  # ...and rolled back: its fsync failed
    seen = {row.run_id for block in [first, *blocks] for row in block}
    assert {run_id(x) for x in rows} <= seen
    assert report.bad_lines == 0


# --- over-long lines ---------------------------------------------------------------------------


def windowed_lines(path: Path, block_size: int, max_line: int, report: ScanReport) -> list[bytes]:
    """Every line `iter_windows` gives, last line first."""
    lines: list[bytes] = []
    for buffer, start, end in iter_windows(path, block_size, report, max_line=max_line):
        lines.extend(reversed(bytes(buffer[start:end]).split(b"\n")))
    return lines


def test_lines_longer_than_the_limit_are_skipped_and_counted(tmp_path: Path) -> None:
    """Property-style against a plain `split`: random files, small limits, fixed seed."""
    rng = random.Random(20260514)
    path = tmp_path / "lines"
    for case in range(300):
        sizes = [rng.choice((0, 1, 2, 3, 4, 5, 9, 20)) for _ in range(rng.randrange(0, 12))]
        lines = [bytes([97 + i]) * size for i, size in enumerate(sizes)]
        content = b"\n".join(lines) + (b"\n" if lines and rng.random() < 0.7 else b"")
        path.write_bytes(content)
        expected = expected_lines_reversed(content)
        for max_line in (1, 3, 4, 8):
            kept = [x for x in expected if len(x) <= max_line]
            for block_size in (1, 2, 5, 64):
                report = ScanReport()
                got = windowed_lines(path, block_size, max_line, report)
                assert got == kept, (case, max_line, block_size, content)
                assert report.bad_lines == len(expected) - len(kept)


#: Scans the data dir argument under an address-space limit of what the interpreter already
#: uses plus the second argument (bytes); prints the run_ids read and the bad lines counted.
CHILD_SCAN_LIMITED = (
    """
import json, sys
from pathlib import Path
from mantisd.reader import Scanner, ScanReport, StatRow
"""
    + LIMIT_ADDRESS_SPACE
    + """
report = ScanReport()
run_ids = [row.run_id for row in Scanner(StatRow).scan(Path(sys.argv[1]), report)]
print(json.dumps({"run_ids": run_ids, "bad_lines": report.bad_lines}))
"""
)


def test_a_64_mib_line_is_streamed_past_in_bounded_memory(data_dir: Path) -> None:
    """64 MiB of junk without a newline, between good rows and again as the last line: a
    scan allowed 48 MiB more than the interpreter's own address space still gets every good
    row (it used to grow its buffer to hold the line: 128 MiB and copies, MemoryError)."""
    good = [line() for _ in range(6)]
    junk = b"j" * (64 << 20)
    path = write_shard(data_dir, "2026-01", b"".join(good[:3]) + junk + b"\n")
    with open(path, "ab") as f:
        f.write(b"".join(good[3:]) + junk)
    proc = run_limited(CHILD_SCAN_LIMITED, str(data_dir), str(48 << 20), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result == {"run_ids": [run_id(x) for x in reversed(good)], "bad_lines": 2}
    assert MAX_LINE_BYTES < (48 << 20) // 4, "the limit leaves room for a window and its copies"
