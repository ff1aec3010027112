"""The reader's fast paths (chunked reads, block prefilter, block dedup) equal the slow ones."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mantisd.reader import (
    KeyedRow,
    Scanner,
    ScanReport,
    StatRow,
    iter_chunks,
    iter_line_blocks,
    json_needle,
)
from tests.stats_data import GOLDEN, golden_run, line, write_shard

CONTENTS = [
    b"",
    b"\n",
    b"a",
    b"a\n",
    b"a\nb",
    b"a\nb\n",
    b"\n\na\n\n",
    b"x" * 100 + b"\n" + b"y" * 3 + b"\n" + b"z" * 50,
    b"".join(b"line %d\n" % i for i in range(200)),
]


@pytest.mark.parametrize("content", CONTENTS)
@pytest.mark.parametrize("block_size", [1, 2, 3, 7, 64, 1 << 20])
def test_blocks_are_the_lines_last_first(tmp_path: Path, content: bytes, block_size: int) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(content)
    expected = content.split(b"\n")
    if content.endswith(b"\n"):
        expected.pop()
    if not content:
        expected = []
    got = [line for block in iter_line_blocks(path, block_size) for line in block]
    assert got == expected[::-1]
    chunks = list(iter_chunks(path, block_size))
    assert b"\n".join(reversed(chunks)) == b"\n".join(expected)


def mixed_lines(rng: random.Random) -> list[bytes]:
    lines = []
    for i in range(400):
        kind = rng.random()
        if kind < 0.5:
            lines.append(golden_run(i % 50, run_id=f"run-{rng.randrange(300)}"))
        elif kind < 0.8:
            lines.append(line(workflow_id="default__other-v1", run_id=f"other-{i}"))
        elif kind < 0.85:
            lines.append(b"\n")
        elif kind < 0.9:
            lines.append(b'{"torn": "' + GOLDEN.encode() + b'"\n')
        elif kind < 0.95:
            lines.append(b"garbage\n")
        else:
            lines.append(golden_run(i % 50, run_id=f"esc-{i}").replace(b"golden", b"\\u0067olden"))
    return lines


def slow_scan(data_dir: Path, prefilter: bytes | None) -> tuple[list[str], ScanReport]:
    """The definition: every line, newest first, decoded alone; bad shapes counted."""
    report = ScanReport()
    decoder = Scanner(StatRow)
    seen: set[str] = set()
    ids = []
    for _, path in sorted((p.stem, p) for p in (data_dir / "runs_log").glob("*.jsonl"))[::-1]:
        for block in iter_line_blocks(path):
            for raw in block:
                if prefilter is not None and prefilter not in raw and b"\\" not in raw:
                    stripped = raw.strip()
                    if not (stripped.startswith(b"{") and stripped.endswith(b"}")):
                        report.bad_lines += 1
                    continue
                rows = decoder.decode_block([raw], report)
                for row in rows:
                    if row.run_id in seen:
                        report.duplicates += 1
                    else:
                        seen.add(row.run_id)
                        ids.append(row.run_id)
    return ids, report


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("prefilter", [None, json_needle(GOLDEN)])
def test_scan_equals_the_definition(data_dir: Path, seed: int, prefilter: bytes | None) -> None:
    rng = random.Random(seed)
    for month in ("2026-04", "2026-05"):
        write_shard(data_dir, month, mixed_lines(rng))
    expected_ids, expected_report = slow_scan(data_dir, prefilter)
    report = ScanReport()
    ids = [r.run_id for r in Scanner(StatRow).scan(data_dir, report, prefilter=prefilter)]
    assert ids == expected_ids
    assert report == ScanReport(
        expected_report.bad_lines, expected_report.duplicates, shards_read=2
    )


def test_without_shape_check_only_candidates_are_counted(data_dir: Path) -> None:
    write_shard(
        data_dir, "2026-05", [b"\n", b"garbage\n", golden_run(1), b'["' + GOLDEN.encode() + b'"]\n']
    )
    report = ScanReport()
    blocks = Scanner(StatRow).scan_blocks(
        data_dir, report, prefilter=json_needle(GOLDEN), shape_check=False
    )
    assert sum(len(b) for b in blocks) == 1
    assert report.bad_lines == 1


class OnlyThink(KeyedRow, forbid_unknown_fields=False):
    think: float


class Loose(KeyedRow):
    pass


def test_fallback_type_decodes_what_the_first_refuses() -> None:
    scanner = Scanner(OnlyThink, fallback=Loose)
    report = ScanReport()
    rows = scanner.decode_block([b'{"run_id":"a","think":1}', b'{"run_id":"b"}', b"{}"], report)
    assert [type(r) for r in rows] == [OnlyThink, Loose]
    assert report.bad_lines == 1
