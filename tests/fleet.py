"""Helpers for the fleet tests: rows of a given month, running `mantis runs ship`, reading back.

The database side is always a real PostgreSQL (`tests.pg`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from mantisd.archive import MonthResult, archive_log
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


def shipped(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[int, int, int]]:
    """The summary table of a run that succeeded: file -> (loaded, duplicates, dead-lettered)."""
    assert result.returncode == 0, result.stderr
    return summary(result.stdout)


def summary(stdout: str) -> dict[str, tuple[int, int, int]]:
    """The summary table a run printed (after its first two lines)."""
    table: dict[str, tuple[int, int, int]] = {}
    for text in stdout.splitlines()[2:]:
        name, *numbers = text.split()
        table[name] = (int(numbers[0]), int(numbers[1]), int(numbers[2]))
    return table


def follow(url: str, data_dir: Path, *extra: str) -> subprocess.Popen[str]:
    """`mantis runs ship --follow` polling every 0.05 s, as a real process."""
    return subprocess.Popen(
        [
            str(MANTIS),
            "runs",
            "ship",
            "--to",
            url,
            "--data-dir",
            str(data_dir),
            "--follow",
            "--interval",
            "0.05",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    """SIGTERM a follower; its exit status, stdout and stderr."""
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def count(url: str) -> int:
    """Runs in the database; -1 while it has no schema yet or cannot be reached."""
    try:
        return int(rows(url, "SELECT count(*) FROM mantis.runs")[0][0])
    except Exception:  # noqa: BLE001 - the schema may not exist yet, or the server be down
        return -1


def valid_ids(content: bytes) -> list[str]:
    """The run_ids of the lines of `content` that are JSON objects with one."""
    ids = []
    for raw in content.split(b"\n")[:-1]:
        try:
            ids.append(msgspec.json.decode(raw)["run_id"])
        except (msgspec.DecodeError, TypeError, KeyError):
            continue
    return ids


def archive(data_dir: Path, before: str) -> list[MonthResult]:
    """`mantis runs archive` of every month before `before` (`YYYY-MM`), for real."""
    now = dt.datetime.fromisoformat(f"{before}-15T00:00:00+00:00")
    return list(archive_log(data_dir, keep_months=1, now=now))


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
