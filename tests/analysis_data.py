"""Hand-made runs for the analysis tests (`--by`, `slowest`, `--breakdown cost`, csv, report)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from mantisd.cli import mantis
from mantisd.schema import BUCKETS
from tests.rows import utc
from tests.stats_data import line, write_shard

WORKFLOW = "default__analysis-v1"
UTC = dt.UTC
#: Run k finishes at START + k minutes (so a larger k is newer).
START = dt.datetime(2026, 10, 1, tzinfo=UTC)


def run(k: int, *, month_start: dt.datetime = START, **fields: Any) -> bytes:
    """A canonical line: run `k` (run_id `run-000k`), finished k minutes after `month_start`,
    each of the nine buckets `k` seconds and total `10 * k`, unless `fields` say otherwise."""
    finished = month_start + dt.timedelta(minutes=k)
    row: dict[str, Any] = {
        "run_id": f"run-{k:04d}",
        "workflow_id": WORKFLOW,
        "finished_at": utc(finished),
        "created_at": utc(finished - dt.timedelta(seconds=30)),
        "total_time_s": 10.0 * k,
        "wall_time_breakdown": {b: float(k) for b in BUCKETS},
    }
    return line(**(row | fields))


def write(data_dir: Path, lines: list[bytes], month: str = "2026-10") -> None:
    write_shard(data_dir, month, lines)


def invoke(command: str, data_dir: Path, *args: str, workflow: str = WORKFLOW) -> Result:
    runner = CliRunner(env={"MANTIS_DATA_DIR": None})
    return runner.invoke(mantis, ["runs", command, workflow, "--data-dir", str(data_dir), *args])


def document(result: Result) -> Any:
    assert result.stdout, result.output
    return json.loads(result.stdout)
