"""The three pods of the parity suites (`test_stats_db`, `test_analysis_db`,
`test_sources_parity`): their sample data, the one data dir that merges them, and how two
sources' answers are compared."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner, Result

from mantisd.cli import mantis
from mantisd.paths import list_shards
from mantisd.sample import generate, workflow_ids
from tests.rows import utc
from tests.stats_data import line, write_shard

END = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
WF, WF2, _ = workflow_ids(3)
CUSTOM = "default__custom-buckets-v1"
PODS = {"pod-a": 11, "pod-b": 12, "pod-c": 13}


def custom_lines() -> list[bytes]:
    """November runs of a workflow with a bucket beyond the nine, in `finished_at` order."""
    start = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    return [
        line(
            workflow_id=CUSTOM,
            run_id=f"custom-{k:03d}",
            finished_at=utc(start + dt.timedelta(minutes=k)),
            created_at=utc(start + dt.timedelta(minutes=k - 5)),
            total_time_s=10.0 + k,
            wall_time_breakdown={"think": 1.0 + k % 7, "warmup": 0.5 * k}
            if k % 3
            else {"think": 2.0},
        )
        for k in range(40)
    ]


def merge(target: Path, sources: list[Path]) -> Path:
    """One data dir with every line of `sources`, each month sorted by (finished_at, run_id)."""
    months: dict[str, list[bytes]] = {}
    for source in sources:
        for month, path in list_shards(source):
            months.setdefault(month, []).extend(path.read_bytes().splitlines(keepends=True))
    for month, lines in months.items():

        def key(raw: bytes) -> tuple[dt.datetime, str]:
            row = msgspec.json.decode(raw)
            return dt.datetime.fromisoformat(row["finished_at"]), row["run_id"]

        write_shard(target, month, sorted(lines, key=key))
    return target


def generate_pods(
    tmp_path_factory: pytest.TempPathFactory, rows: int, prefix: str = ""
) -> dict[str, Path]:
    """Each pod's data dir: two months of three workflows, `WF`'s settle 1.4x slower on
    pod-b from 2026-10-18 (what `compare` and `trend` must find)."""
    pods = {}
    for name, seed in PODS.items():
        pods[name] = tmp_path_factory.mktemp(prefix + name)
        generate(
            pods[name],
            rows=rows,
            months=2,
            workflows=3,
            seed=seed,
            end=END,
            slow_bucket="settle",
            slow_factor=1.4 if name == "pod-b" else 1.0,
            slow_since=dt.datetime(2026, 10, 18, tzinfo=dt.UTC),
            slow_workflow=WF,
        )
    return pods


def invoke(*args: str) -> Result:
    return CliRunner(env={"MANTIS_DATA_DIR": None}).invoke(mantis, ["runs", *args])


def close(a: Any, b: Any) -> bool:
    """JSON documents equal, floats to 1e-9 relative."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def assert_same(files: Result, database: Result) -> None:
    assert (files.exit_code, database.exit_code) == (files.exit_code, files.exit_code), (
        files.output,
        database.output,
    )
    if files.stdout.startswith("{"):
        assert close(json.loads(files.stdout), json.loads(database.stdout)), (
            files.stdout,
            database.stdout,
        )
    else:
        assert database.stdout == files.stdout
    if files.exit_code in (0, 3):
        assert database.stderr == files.stderr


def assert_answers_as_files(args: Sequence[str], merged: Path, *source: str) -> None:
    """`mantis runs ARGS` from the `source` options prints what it prints from the merged
    data dir (which must answer: found, not found, usage error or regression)."""
    files = invoke(*args, "--data-dir", str(merged))
    assert files.exit_code in (0, 1, 2, 3), files.output
    assert_same(files, invoke(*args, *source))
