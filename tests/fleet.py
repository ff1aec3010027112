"""Helpers for the fleet tests: rows of a given month, running `mantis runs ship`, reading back.

The database side is always a real PostgreSQL (`tests.pg`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg

from tests.rows import utc
from tests.stats_data import line

MANTIS = Path(sys.executable).parent / "mantis"
_seconds = itertools.count()


def month_line(month: str, **overrides: Any) -> bytes:
    """A canonical line of a run finished in `month` (`YYYY-MM`), one second after the last."""
    year, number = map(int, month.split("-"))
    finished = dt.datetime(year, number, 2, tzinfo=dt.UTC) + dt.timedelta(seconds=next(_seconds))
    fields: dict[str, Any] = {
        "finished_at": utc(finished),
        "created_at": utc(finished - dt.timedelta(minutes=4)),
    }
    return line(**(fields | overrides))


def month_lines(month: str, count: int, **overrides: Any) -> list[bytes]:
    return [month_line(month, **overrides) for _ in range(count)]


def ship(
    url: str | None,
    data_dir: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`mantis runs ship --to URL --data-dir DIR ARGS` as a real process."""
    target = ["--to", url] if url else []
    return subprocess.run(
        [str(MANTIS), "runs", "ship", *target, "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def rows(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.encode(), params).fetchall()


def execute(url: str, sql: str, params: Sequence[Any] = ()) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(sql.encode(), params)


def run_ids(url: str) -> list[str]:
    """Every shipped run_id, sorted (duplicates would show twice)."""
    return [run_id for (run_id,) in rows(url, "SELECT run_id FROM mantis.runs ORDER BY run_id")]


def line_ids(lines: Sequence[bytes]) -> list[str]:
    """The run_ids of canonical lines, sorted."""
    import msgspec

    return sorted(msgspec.json.decode(raw)["run_id"] for raw in lines)
