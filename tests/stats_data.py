"""Shards for the `mantis runs stats` tests: canonical lines, or raw bytes for bad input."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from mantisd.paths import shard_path
from mantisd.schema import BUCKETS, validate
from tests.rows import make_row, utc

GOLDEN = "default__golden-v1"
#: Seconds per bucket of the golden runs: run k (1..5) spends `base * k` in each bucket.
GOLDEN_BASES = {
    "think": 20.0,
    "claude_extract": 30.0,
    "settle": 10.0,
    "claude_ground": 5.0,
    "perceive": 4.0,
    "load": 3.0,
    "act": 2.0,
    "claude_verify": 1.0,
    "overhead": 0.5,
}
GOLDEN_TOTAL_BASE = 80.0


def line(**overrides: Any) -> bytes:
    """A canonical stored line (what the store writes) for `make_row(**overrides)`."""
    return validate(make_row(**overrides)).line


def golden_run(k: int, **overrides: Any) -> bytes:
    finished = dt.datetime(2026, 5, 13, 18, k, tzinfo=dt.UTC)
    fields: dict[str, Any] = {
        "workflow_id": GOLDEN,
        "finished_at": utc(finished),
        "created_at": utc(finished - dt.timedelta(minutes=5)),
        "total_time_s": GOLDEN_TOTAL_BASE * k,
        "wall_time_breakdown": {b: GOLDEN_BASES[b] * k for b in BUCKETS},
    }
    return line(**(fields | overrides))


def write_shard(data_dir: Path, month: str, lines: list[bytes], *, end: bytes = b"") -> Path:
    """Append `lines` (each ending in `\\n` already) and then `end` to a month shard."""
    path = shard_path(data_dir, month)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write(b"".join(lines) + end)
    return path


def write_golden(data_dir: Path) -> None:
    """Five succeeded golden runs, with a failed run and another workflow's run among them."""
    write_shard(
        data_dir,
        "2026-05",
        [
            golden_run(1),
            line(workflow_id="default__other-v1", total_time_s=9999.0),
            golden_run(2),
            golden_run(3),
            golden_run(9, status="failed", error="boom", wall_time_breakdown={"think": 500.0}),
            golden_run(4),
            golden_run(5),
        ],
    )
