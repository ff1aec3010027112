"""`--data-dir` given more than once: several pods' logs read as one.

Shard names collide between pods (every pod has a `2026-10.jsonl`): rows are matched by
content (`run_id`), never by path. "Last N" across dirs is the newest by `finished_at`; with
one dir it stays the log's order.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from click.testing import CliRunner, Result

from mantisd.cli import mantis
from tests.rows import utc
from tests.stats_data import line, write_shard

WF = "default__marketplace-listings-v1"
EARLY = dt.datetime(2026, 10, 5, 10, tzinfo=dt.UTC)
LATE = dt.datetime(2026, 10, 5, 11, tzinfo=dt.UTC)


def invoke(*args: str) -> Result:
    return CliRunner(env={"MANTIS_DATA_DIR": None}).invoke(mantis, ["runs", *args])


def stats_json(*args: str) -> dict[str, object]:
    result = invoke("stats", WF, "--json", *args)
    assert result.exit_code == 0, result.output
    document: dict[str, object] = json.loads(result.stdout)
    return document


def p50(document: dict[str, object]) -> float:
    return document["percentiles"]["total_time_s"]["p50"]  # type: ignore[index, no-any-return]


def test_last_n_across_dirs_is_the_newest_by_finished_at(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    newest = line(run_id="newest", finished_at=utc(LATE), total_time_s=111.0)
    logged_last = line(run_id="logged-last", finished_at=utc(EARLY), total_time_s=222.0)
    write_shard(a, "2026-10", [newest, logged_last])  # a late arrival, logged after
    write_shard(b, "2026-10", [line(run_id="older", finished_at=utc(EARLY - dt.timedelta(1)))])
    assert p50(stats_json("--last", "1", "--data-dir", str(a))) == 222.0  # the log's order
    both = stats_json("--last", "1", "--data-dir", str(a), "--data-dir", str(b))
    assert p50(both) == 111.0  # the newest finished_at
    assert stats_json("--data-dir", str(a), "--data-dir", str(b))["run_count"] == 3


def test_a_run_in_two_dirs_counts_once_whatever_the_shard_names(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    shared = line(run_id="in-both", finished_at=utc(LATE))
    write_shard(a, "2026-10", [line(run_id="only-a", finished_at=utc(EARLY)), shared])
    write_shard(b, "2026-10", [shared, line(run_id="only-b", finished_at=utc(EARLY))])
    result = invoke("stats", WF, "--json", "--data-dir", str(a), "--data-dir", str(b))
    assert json.loads(result.stdout)["run_count"] == 3
    assert "warning: dropped 1 duplicate run_id(s)" in result.stderr
    listed = invoke("list", "--json", "--data-dir", str(a), "--data-dir", str(b))
    assert json.loads(listed.stdout)["workflows"][0]["run_count"] == 3
    same_twice = invoke("stats", WF, "--json", "--data-dir", str(a), "--data-dir", str(a))
    assert json.loads(same_twice.stdout)["run_count"] == 2  # one dir named twice is one dir


def test_no_runs_names_every_dir(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    result = invoke("stats", WF, "--data-dir", str(a), "--data-dir", str(b))
    assert result.exit_code == 1
    assert f"in {a / 'runs_log'}, {b / 'runs_log'}" in result.stderr


def test_a_missing_dir_among_several_is_named(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    result = invoke("list", "--data-dir", str(tmp_path / "a"), "--data-dir", str(tmp_path / "z"))
    assert result.exit_code == 1
    assert f"data dir {tmp_path / 'z'} does not exist" in result.stderr
