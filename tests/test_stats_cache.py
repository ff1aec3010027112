"""The columnar cache (`mantisd.stats.cache`): never believed over the log.

Each test compares answers read through the cache with the log's own (`MANTIS_CACHE=off`):
the runs, every value of every bucket, skipped lines, duplicates and shards read. Segments
are written for ranges of any size here (`TAIL_BYTES` 1), so that appends, truncations,
replacements, archives, concurrent writers and damaged cache files meet real segments.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mantisd.paths import LogFile, shard_path
from mantisd.schema import TOTAL
from mantisd.stats import cache as cache_module
from mantisd.stats.query import StatsQuery, select, select_many, select_periods
from mantisd.stats.segment import SegmentFile
from tests.cache_parity import environment, summarize, summary
from tests.full_disk import fill, mounted_tmpfs
from tests.rows import utc
from tests.stats_data import GOLDEN, line, write_shard
from tests.unprivileged import AS_NOBODY, NOBODY

OTHER = "default__other-v1"
MONTHS = ("2026-01", "2026-02", "2026-03")
START = {m: dt.datetime.strptime(m, "%Y-%m").replace(tzinfo=dt.UTC) for m in MONTHS}


def run_line(month: str, k: int, rng: random.Random, **overrides: Any) -> bytes:
    """A valid row of `month`: the golden workflow mostly, some failed, some buckets
    missing, some others."""
    finished = START[month] + dt.timedelta(hours=k + 1, seconds=rng.randrange(60))
    breakdown = {"think": round(rng.uniform(1, 100), 3), "act": round(rng.uniform(1, 9), 3)}
    if rng.random() < 0.2:
        del breakdown["act"]
    if rng.random() < 0.1:
        breakdown["gpu_warmup"] = round(rng.uniform(1, 5), 3)
    fields: dict[str, Any] = {
        "run_id": f"{month}-{k:05d}",
        "workflow_id": GOLDEN if rng.random() < 0.7 else OTHER,
        "status": "succeeded" if rng.random() < 0.8 else "failed",
        "finished_at": utc(finished),
        "created_at": utc(finished - dt.timedelta(minutes=1)),
        "total_time_s": round(sum(breakdown.values()) + 1, 3),
        "wall_time_breakdown": breakdown,
    }
    return line(**(fields | overrides))


def write_months(data_dir: Path, count: int = 120, seed: int = 1) -> None:
    rng = random.Random(seed)
    for month in MONTHS:
        write_shard(data_dir, month, [run_line(month, k, rng) for k in range(count)])


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The cache is used for every query and written for ranges of any size."""
    home = tmp_path / "cache-home"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.setenv("MANTIS_CACHE", "always")
    monkeypatch.setattr(cache_module, "TAIL_BYTES", 1)
    return home


def segments(home: Path) -> list[Path]:
    return sorted(home.glob("mantis/stats-v1/*/*.seg"))


def from_log(call: Any, *args: Any, **kwargs: Any) -> Any:
    with environment(MANTIS_CACHE="off"):
        return summarize(call(*args, **kwargs))


def from_cache(call: Any, *args: Any, **kwargs: Any) -> Any:
    with environment(MANTIS_CACHE="always"):
        return summarize(call(*args, **kwargs))


def assert_same(data_dir: Path, query: StatsQuery) -> dict[str, Any]:
    """The cache's answer (cold, then warm) is the log's; returns it."""
    expected = from_log(select, data_dir, query)
    assert from_cache(select, data_dir, query) == expected
    assert from_cache(select, data_dir, query) == expected
    return expected  # type: ignore[no-any-return]


QUERIES = [
    StatsQuery(GOLDEN, last=1),
    StatsQuery(GOLDEN, last=7),
    StatsQuery(GOLDEN, last=100),
    StatsQuery(GOLDEN, last=150),
    StatsQuery(GOLDEN, last=5000),
    StatsQuery(GOLDEN, last=sys.maxsize, status=None),
    StatsQuery(GOLDEN, last=30, status="failed"),
    StatsQuery(OTHER, last=5000),
    StatsQuery("default__nobody-v1", last=5000),
    StatsQuery(GOLDEN, last=5000, since=START["2026-02"] + dt.timedelta(days=2)),
    StatsQuery(GOLDEN, last=40, until=START["2026-03"] + dt.timedelta(days=1, hours=7)),
    StatsQuery(
        GOLDEN,
        last=5000,
        status=None,
        since=START["2026-01"] + dt.timedelta(days=3),
        until=START["2026-03"] + dt.timedelta(hours=30),
    ),
]


# ------------------------------------------------------------------ the same answers


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.workflow_id[9:14]}-{q.last}")
def test_the_cache_answers_as_the_log(data_dir: Path, cache_home: Path, query: StatsQuery) -> None:
    write_months(data_dir)
    assert_same(data_dir, query)
    assert segments(cache_home), "the answer came from segments"


def messy_month(data_dir: Path) -> None:
    """Unreadable lines, repeated runs, another bucket name, a run_id shared by another
    workflow, a torn last line: what the reader skips and counts must be counted alike."""
    rng = random.Random(9)
    month = "2026-02"
    good = [run_line(month, 1000 + k, rng) for k in range(60)]
    bad = [
        b"\n",
        b"not json at all\n",
        b'{"workflow_id": "' + GOLDEN.encode() + b'"}\n',  # mentions it: counted
        b'{"workflow_id": "' + OTHER.encode() + b'"}\n',  # does not: not counted for GOLDEN
        b'["\\u0064efault"]\n',  # an escape: a candidate whatever the workflow
    ]
    ours = [row for row in good if GOLDEN.encode() in row]
    again = [ours[1], ours[4], ours[4]]  # retried rows, written again
    write_shard(data_dir, month, good[:30] + bad + again + good[30:], end=b'{"torn')


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.workflow_id[9:14]}-{q.last}")
def test_skipped_lines_and_duplicates_are_counted_as_the_log_counts_them(
    data_dir: Path, cache_home: Path, query: StatsQuery
) -> None:
    write_months(data_dir)
    messy_month(data_dir)
    answer = assert_same(data_dir, query)
    if query.workflow_id == GOLDEN and query.last == sys.maxsize:
        assert answer["report"]["bad_lines"] == 2  # the line naming it, the escaped one
        assert answer["report"]["duplicates"] == 3


@pytest.mark.parametrize(
    ("beside", "runs", "bad"),
    [("a blank line", 20, 1), ("a row spread over two lines", 19, 2)],
    ids=["blank", "spread"],
)
def test_a_line_holding_two_rows_is_skipped_as_the_log_skips_it(
    data_dir: Path, cache_home: Path, beside: str, runs: int, bad: int
) -> None:
    """Two rows on one line (a newline lost) in the block of a blank line, or of a row spread
    over two lines: as many JSON values as lines. The reader decodes each line alone (a block
    at once only as one JSON array of its lines), so the double line is unreadable (skipped,
    counted), and so is each half of the spread row: the cache takes none of their rows."""
    rng = random.Random(12)
    rows = [run_line("2026-02", k, rng, workflow_id=GOLDEN) for k in range(22)]
    double = rows[5].removesuffix(b"\n") + rows[6]
    if beside == "a blank line":
        odd = [b"\n", rows[7]]
    else:  # its first half does not name the workflow: counted for no query
        odd = [rows[7].replace(b",", b",\n", 1)]
        assert odd[0].startswith(b'{"schema_version":1,\n')
    write_shard(data_dir, "2026-02", [*rows[:5], double, *odd, *rows[8:]])
    assert_same(data_dir, StatsQuery(GOLDEN, last=7))
    answer = assert_same(data_dir, StatsQuery(GOLDEN, last=5000, status=None))
    assert (answer["run_count"], answer["report"]["bad_lines"]) == (runs, bad)
    edges = [START["2026-02"] + dt.timedelta(hours=6 * k) for k in range(6)]
    query = StatsQuery(GOLDEN, status=None)
    assert from_cache(select_periods, data_dir, query, edges) == from_log(
        select_periods, data_dir, query, edges
    )


def test_a_run_id_shared_with_another_workflow_is_read_from_the_log(
    data_dir: Path, cache_home: Path
) -> None:
    rng = random.Random(3)
    rows = [run_line("2026-01", k, rng, workflow_id=GOLDEN, status="succeeded") for k in range(9)]
    clash = run_line("2026-01", 99, rng, run_id="2026-01-00004", workflow_id=OTHER)
    mention = run_line("2026-01", 98, rng, run_id="2026-01-00005", workflow_id=OTHER, error=GOLDEN)
    write_shard(data_dir, "2026-01", [*rows, clash, mention])
    answer = assert_same(data_dir, StatsQuery(GOLDEN, last=5000))
    assert answer["run_count"] == 8 and answer["report"]["duplicates"] == 1


def test_runs_repeated_across_months_are_kept_once(data_dir: Path, cache_home: Path) -> None:
    write_months(data_dir)
    rng = random.Random(4)
    older = run_line("2026-01", 500, rng, run_id="2026-03-00001", workflow_id=GOLDEN)
    write_shard(data_dir, "2026-01", [older])
    for query in QUERIES:
        assert_same(data_dir, query)


def test_trends_and_compare_windows_answer_as_the_log(data_dir: Path, cache_home: Path) -> None:
    write_months(data_dir)
    messy_month(data_dir)
    query = StatsQuery(GOLDEN, status=None)
    for step in (dt.timedelta(days=1), dt.timedelta(days=7), dt.timedelta(days=31)):
        edges = [START["2026-01"] + step * k for k in range(int(dt.timedelta(days=95) / step))]
        expected = from_log(select_periods, data_dir, query, edges)
        assert from_cache(select_periods, data_dir, query, edges) == expected
        assert from_cache(select_periods, data_dir, query, edges) == expected
    windows = [
        StatsQuery(GOLDEN, last=sys.maxsize, since=START["2026-01"], until=START["2026-02"]),
        StatsQuery(GOLDEN, last=sys.maxsize, since=START["2026-02"]),
    ]
    expected = from_log(select_many, data_dir, windows)
    assert from_cache(select_many, data_dir, windows) == expected


def test_compare_windows_count_what_every_month_skips_as_the_log(
    data_dir: Path, cache_home: Path
) -> None:
    """`select_many`'s windows read every month of their window, even past the N-th run:
    what those months skip is counted (as the log's pool of workers counts it)."""
    from mantisd.sample import generate, workflow_ids

    generate(data_dir, rows=14_000, months=2, workflows=1, seed=3, end=START["2026-03"])
    workflow = workflow_ids(1)[0]
    write_shard(data_dir, "2026-01", [b'{"workflow_id": "' + workflow.encode() + b'"}\n'])
    windows = [StatsQuery(workflow, last=5000), StatsQuery(workflow, last=5000, status=None)]
    expected = from_log(select_many, data_dir, windows)
    assert expected[0]["report"]["bad_lines"] == 1  # in the older month, past the 5000th run
    assert from_cache(select_many, data_dir, windows) == expected
    assert from_cache(select_many, data_dir, windows) == expected


def test_a_big_shard_is_split_across_workers(
    data_dir: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "SEGMENT_BYTES", 16 << 10)
    write_months(data_dir, count=300)
    for query in QUERIES:
        assert_same(data_dir, query)
    pieces = [p for p in segments(cache_home) if p.name.startswith("2026-02.jsonl@")]
    assert len(pieces) > 4


def test_a_line_longer_than_the_reader_reads_is_counted_once(
    data_dir: Path, cache_home: Path
) -> None:
    write_months(data_dir, count=20)
    huge = b'{"workflow_id": "' + GOLDEN.encode() + b'", "x": "' + b"x" * (9 << 20) + b'"}\n'
    write_shard(data_dir, "2026-02", [huge, run_line("2026-02", 77, random.Random(1))])
    answer = assert_same(data_dir, StatsQuery(GOLDEN, last=5000))
    assert answer["report"]["bad_lines"] == 1


# ------------------------------------------------------------------ invalidation


def test_rows_appended_after_the_cache_are_read(data_dir: Path, cache_home: Path) -> None:
    write_months(data_dir)
    query = StatsQuery(GOLDEN, last=5000, status=None)
    before = assert_same(data_dir, query)
    rng = random.Random(7)
    write_shard(
        data_dir,
        "2026-03",
        [run_line("2026-03", 400 + k, rng, workflow_id=GOLDEN) for k in range(5)],
    )
    after = assert_same(data_dir, query)
    assert after["run_count"] == before["run_count"] + 5


def test_a_truncated_shard_is_read_again(data_dir: Path, cache_home: Path) -> None:
    write_months(data_dir)
    query = StatsQuery(GOLDEN, last=5000, status=None)
    assert_same(data_dir, query)
    shard = shard_path(data_dir, "2026-03")
    lines = shard.read_bytes().splitlines(keepends=True)
    shard.write_bytes(b"".join(lines[:50]))  # a writer's rollback, and more
    fewer = assert_same(data_dir, query)
    # other rows grow it past where the cache ended: the bytes there differ
    rng = random.Random(8)
    write_shard(data_dir, "2026-03", [run_line("2026-03", 900 + k, rng) for k in range(90)])
    assert assert_same(data_dir, query)["run_count"] > fewer["run_count"]


@pytest.mark.parametrize("how", ["renamed over", "rewritten in place"])
def test_a_replaced_shard_is_read_again(data_dir: Path, cache_home: Path, how: str) -> None:
    write_months(data_dir)
    query = StatsQuery(GOLDEN, last=5000, status=None)
    assert_same(data_dir, query)
    shard = shard_path(data_dir, "2026-02")
    other = shard.with_name("other")
    write_months(other.parent.parent / "other-data", seed=2)
    replacement = shard_path(other.parent.parent / "other-data", "2026-02").read_bytes()
    if how == "renamed over":
        other.write_bytes(replacement)
        other.rename(shard)
    else:
        with open(shard, "r+b") as f:  # same inode, same size (or more): other bytes
            f.write(replacement)
    assert_same(data_dir, query)


def test_an_archived_month_is_read_from_its_archive(data_dir: Path, cache_home: Path) -> None:
    from mantisd.archive import archive_log

    write_months(data_dir)
    query = StatsQuery(GOLDEN, last=5000, status=None)
    expected = assert_same(data_dir, query)
    results = list(archive_log(data_dir, keep_months=1, now=START["2026-03"]))
    assert [r.month for r in results] == ["2026-01", "2026-02"]
    assert assert_same(data_dir, query) == expected
    names = {p.name for p in segments(cache_home)}
    assert "2026-01.jsonl.zst@0.seg" in names
    assert "2026-01.jsonl@0.seg" not in names  # the shard is gone: so is its segment
    rng = random.Random(5)  # late rows: a fresh plain shard beside the archive
    write_shard(data_dir, "2026-01", [run_line("2026-01", 700 + k, rng) for k in range(8)])
    assert assert_same(data_dir, query)["run_count"] > expected["run_count"]


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_a_month_archived_as_the_cache_lists_the_log_is_read_from_its_archive(
    data_dir: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch, warm: bool
) -> None:
    """`mantis runs archive` runs between the cache's listing of `runs_log/` and its opening
    of the shards: the plain shards it listed are gone, their rows are in the new archives,
    and read from there (as the reader reads them), not dropped."""
    from mantisd.archive import archive_log

    write_months(data_dir)
    query = StatsQuery(GOLDEN, last=5000, status=None)
    if warm:
        assert_same(data_dir, query)  # the plain shards have segments
    listed = cache_module.log_files_in
    archived: list[str] = []

    def list_then_archive(dir_fd: int, directory: Path) -> list[LogFile]:
        files = listed(dir_fd, directory)
        if not archived:
            results = archive_log(data_dir, keep_months=1, now=START["2026-03"])
            archived.extend(r.month for r in results)
        return files

    monkeypatch.setattr(cache_module, "log_files_in", list_then_archive)
    raced = from_cache(select, data_dir, query)
    assert archived == ["2026-01", "2026-02"]
    names = {p.name for p in segments(cache_home)}
    expected = from_log(select, data_dir, query)
    assert from_cache(select, data_dir, query) == expected  # the race is over
    raced_files = raced["report"].pop("shards_read")
    files = expected["report"].pop("shards_read")
    assert raced == expected
    assert raced_files == files + 2  # as the reader in that race: the vanished shards too
    assert {"2026-01.jsonl.zst@0.seg", "2026-02.jsonl.zst@0.seg"} <= names  # built, kept


def test_rows_appended_while_queries_run(data_dir: Path, cache_home: Path) -> None:
    """A writer appends run k (total_time_s = k, finished in order) while queries run: each
    answer holds exactly runs 1..m for some m (never a torn or missing one), and once the
    writer is done, the log's answer."""
    start = START["2026-03"]
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import datetime as dt, sys
                from pathlib import Path
                from mantisd.schema import validate
                from mantisd.store import append_rows
                from tests.rows import make_row, utc
                start = dt.datetime.fromisoformat({start.isoformat()!r})
                for k in range(1, 1501):
                    t = start + dt.timedelta(seconds=k)
                    row = make_row(run_id=f"run-{{k}}", workflow_id={GOLDEN!r},
                                   finished_at=utc(t), created_at=utc(t), total_time_s=float(k))
                    append_rows(Path({str(data_dir)!r}), [validate(row)])
                """
            ),
        ],
        cwd=Path(__file__).resolve().parents[1],
    )
    query = StatsQuery(GOLDEN, last=sys.maxsize)
    answers = 0
    try:
        while writer.poll() is None or answers < 3:
            totals = from_cache(select, data_dir, query)["values"].get(TOTAL, [])
            assert totals == [float(k) for k in range(1, len(totals) + 1)]
            answers += 1
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0
    assert answers >= 3
    assert assert_same(data_dir, query)["run_count"] == 1500


def test_a_line_being_written_is_not_cached(data_dir: Path, cache_home: Path) -> None:
    write_months(data_dir)
    rng = random.Random(6)
    whole = run_line("2026-03", 130, rng, workflow_id=GOLDEN, status="succeeded")
    shard = write_shard(data_dir, "2026-03", [], end=whole[:-30])  # half of it, for now
    query = StatsQuery(GOLDEN, last=5000)
    torn = assert_same(data_dir, query)
    assert torn["report"]["bad_lines"] == 1
    with open(shard, "ab") as f:
        f.write(whole[-30:])
    assert assert_same(data_dir, query)["run_count"] == torn["run_count"] + 1


# ------------------------------------------------------------------ damaged caches


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "cut short":
        data = data[: len(data) // 2]
    elif how == "empty":
        data = bytearray()
    elif how == "garbage":
        data = bytearray(random.Random(1).randbytes(len(data)))
    elif how == "zeroed tail":  # a crash after the rename, before the data reached the disk
        data[len(data) // 3 :] = bytes(len(data) - len(data) // 3)
    elif how == "a flipped value":
        data[-200] ^= 0x40
    elif how == "a flipped header byte":
        data[40] ^= 0x01
    path.write_bytes(bytes(data))


HOW = ["cut short", "empty", "garbage", "zeroed tail", "a flipped value", "a flipped header byte"]


@pytest.mark.parametrize("how", HOW)
def test_a_damaged_segment_is_ignored_and_built_again(
    data_dir: Path, cache_home: Path, how: str
) -> None:
    write_months(data_dir)
    query = StatsQuery(GOLDEN, last=5000, status=None)
    assert_same(data_dir, query)
    for path in segments(cache_home):
        damage(path, how)
    expected = from_log(select, data_dir, query)
    assert from_cache(select, data_dir, query) == expected
    for path in segments(cache_home):  # built again: whole and readable
        loaded = SegmentFile(os.open(path, os.O_RDONLY))
        try:
            for name in loaded.header.arrays:
                loaded.array(name)
        finally:
            loaded.close()
    assert from_cache(select, data_dir, query) == expected


def test_deleting_the_cache_changes_no_answer(data_dir: Path, cache_home: Path) -> None:
    write_months(data_dir)
    query = StatsQuery(GOLDEN, last=5000, status=None)
    expected = assert_same(data_dir, query)
    shutil.rmtree(cache_home)
    assert from_cache(select, data_dir, query) == expected


# ------------------------------------------------------------------ where it is written


def test_the_cache_of_a_data_dir_that_is_gone_is_removed(tmp_path: Path, cache_home: Path) -> None:
    gone, kept = tmp_path / "gone", tmp_path / "kept"
    write_months(gone)
    write_months(kept)
    query = StatsQuery(GOLDEN, last=5000)
    from_cache(select, gone, query)
    caches = cache_home / "mantis" / "stats-v1"
    [orphan] = list(caches.iterdir())
    shutil.rmtree(gone)
    from_cache(select, kept, query)  # writes its own cache, and tidies up
    assert [p.name for p in caches.iterdir()] != [orphan.name]
    assert len(list(caches.iterdir())) == 1
    from_cache(select, kept, query)
    assert len(list(caches.iterdir())) == 1, "a live data dir's cache stays"


def test_links_in_the_cache_dir_are_never_followed(
    data_dir: Path, cache_home: Path, tmp_path: Path
) -> None:
    write_months(data_dir)
    query = StatsQuery(GOLDEN, last=5000, status=None)
    expected = assert_same(data_dir, query)
    victim = tmp_path / "victim"
    victim.write_bytes(b"not a segment")
    for path in segments(cache_home):
        path.unlink()
        path.symlink_to(victim)
    assert from_cache(select, data_dir, query) == expected
    assert victim.read_bytes() == b"not a segment"
    assert all(not p.is_symlink() for p in segments(cache_home))  # replaced, not followed
    # a link where a cache directory belongs: the spare dir is used, the target stays empty
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(cache_home / "mantis")
    (cache_home / "mantis").symlink_to(elsewhere)
    assert from_cache(select, data_dir, query) == expected
    assert list(elsewhere.iterdir()) == []


def test_someone_elses_segments_are_not_read(data_dir: Path, cache_home: Path) -> None:
    write_months(data_dir)
    query = StatsQuery(GOLDEN, last=5000, status=None)
    assert_same(data_dir, query)
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")  # pragma: no cover
    for path in segments(cache_home):
        os.chown(path, NOBODY, NOBODY)
    assert from_cache(select, data_dir, query) == from_log(select, data_dir, query)
    assert all(p.stat().st_uid == os.geteuid() for p in segments(cache_home))


@pytest.mark.parametrize("where", ["read-only", "full", "another user's", "no home"])
def test_a_cache_dir_that_cannot_be_written_changes_no_answer(
    data_dir: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    write_months(data_dir)
    query = StatsQuery(GOLDEN, last=5000, status=None)
    expected = from_log(select, data_dir, query)
    spares_before = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("mantis-cache-*"))
    with contextlib.ExitStack() as stack:
        if where == "read-only":
            stack.enter_context(mounted_tmpfs(cache_home, "ro,size=1m,mode=0700"))
        elif where == "full":
            stack.enter_context(mounted_tmpfs(cache_home, "size=64k,mode=0700"))
            fill(cache_home)
        elif where == "another user's":
            (cache_home / "mantis").mkdir(parents=True)
            os.chown(cache_home / "mantis", NOBODY, NOBODY)
        else:
            monkeypatch.delenv("XDG_CACHE_HOME")
            monkeypatch.delenv("HOME", raising=False)
        assert from_cache(select, data_dir, query) == expected
        assert from_cache(select, data_dir, query) == expected
        assert segments(cache_home) == []
    spares_after = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("mantis-cache-*"))
    assert spares_after <= spares_before, "the private spare dir is removed after the query"


def test_a_read_only_data_dir_is_cached_in_the_users_cache(traversable_dir: Path) -> None:
    """`nobody` queries a data dir it may not write: the cache goes to its own cache dir,
    the data dir is untouched, the answer is the log's."""
    from mantisd.sample import generate, workflow_ids

    data_dir = traversable_dir / "data"
    generate(data_dir, rows=12_000, months=1, workflows=2, seed=1, end=START["2026-02"])
    for path in [data_dir, *data_dir.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    home = traversable_dir / "nobody-cache"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in data_dir.rglob("*"))
    argv = ["-m", "mantisd.cli", "runs", "stats", workflow_ids(2)[0], "--last", "5000"]
    argv += ["--json", "--data-dir", str(data_dir)]
    env = {**os.environ, "XDG_CACHE_HOME": str(home), "MANTIS_CACHE": "always"}
    prefix = AS_NOBODY if os.geteuid() == 0 else ()
    cached = subprocess.run(
        [*prefix, sys.executable, *argv], capture_output=True, text=True, env=env, cwd="/"
    )
    plain = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, env=env | {"MANTIS_CACHE": "off"}
    )
    assert cached.returncode == plain.returncode == 0, cached.stderr
    assert json.loads(cached.stdout) == json.loads(plain.stdout)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in data_dir.rglob("*")) == before
    assert segments(home), "nobody's own cache dir holds the segments"


# ------------------------------------------------------------------ the knob


def test_mantis_cache_off_writes_nothing(data_dir: Path, cache_home: Path) -> None:
    write_months(data_dir)
    with environment(MANTIS_CACHE="off"):
        select(data_dir, StatsQuery(GOLDEN, last=5000))
    assert not cache_home.exists()


def test_a_bad_mantis_cache_value_is_a_usage_error_naming_it(data_dir: Path) -> None:
    from mantisd.cli import mantis

    write_months(data_dir)
    result = CliRunner().invoke(
        mantis,
        ["runs", "stats", GOLDEN, "--data-dir", str(data_dir)],
        env={"MANTIS_CACHE": "sometimes"},
    )
    assert result.exit_code == 2, result.output
    assert "MANTIS_CACHE" in result.output and "sometimes" in result.output


def test_by_default_only_big_queries_over_big_shards_use_the_cache(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mantisd.sample import generate, workflow_ids

    home = tmp_path / "cache-home"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.delenv("MANTIS_CACHE", raising=False)
    end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    generate(data_dir, rows=2000, months=1, workflows=2, seed=1, end=end)
    workflow = workflow_ids(2)[0]
    select(data_dir, StatsQuery(workflow, last=100_000))
    assert segments(home) == [], "a small log is read as before"
    generate(data_dir, rows=30_000, months=1, workflows=2, seed=2, end=end + dt.timedelta(days=31))
    select(data_dir, StatsQuery(workflow))
    assert segments(home) == [], "the default query reads the newest lines, not the cache"
    expected = from_log(select, data_dir, StatsQuery(workflow, last=100_000))
    assert summary(select(data_dir, StatsQuery(workflow, last=100_000))) == expected
    assert segments(home)


# ------------------------------------------------------------------ every stats test


@pytest.mark.slow
def test_every_stats_test_gets_the_same_answers_from_the_cache(tmp_path: Path) -> None:
    """The stats tests, each query answered from the log, a cold and a warm cache, compared
    (`tests.cache_parity`)."""
    files = [
        "tests/test_cli_stats.py",
        "tests/test_stats_query.py",
        "tests/test_stats_windows.py",
        "tests/test_trend.py",
        "tests/test_cli_compare.py",
        "tests/test_stats_order.py",
    ]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.cache_parity",
            "-p",
            "no:cacheprovider",
            "-x",
            *files,
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
