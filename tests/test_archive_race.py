"""`mantis runs archive` racing real writers, and killed with SIGKILL at random points.

A real daemon (tests/daemon_process.py) and direct writers (the client fallback's own
`append_rows`) keep appending late rows to a closed month, and rows to the current one, while
`mantis runs archive` runs again and again as a process, most runs killed at a random
moment: while it starts, compresses, waits for the writers' lock, renames, unlinks. After a
last complete run, every acknowledged row is in the log, and no line is there twice: the
archive and the shards hold exactly the distinct rows, which readers see with no duplicate.
"""

from __future__ import annotations

import datetime as dt
import io
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard

from mantisd.paths import list_log_files
from mantisd.reader import CheckedRow, Scanner, ScanReport
from mantisd.schema import validate
from mantisd.store import StoreError, append_rows
from tests.daemon_process import running_daemon
from tests.fleet import month_lines
from tests.rows import make_row, utc
from tests.stats_data import write_shard

MANTIS = Path(sys.executable).with_name("mantis")
CLOSED = "2025-01"
RACE_SECONDS = 20.0


def late_row(rng: random.Random) -> dict[str, Any]:
    finished = dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
        seconds=rng.randrange(31 * 86400)
    )
    return make_row(finished_at=utc(finished), created_at=utc(finished - dt.timedelta(minutes=3)))


def every_line(data_dir: Path) -> list[bytes]:
    """Every line of every shard and archive, as stored."""
    lines: list[bytes] = []
    for file in list_log_files(data_dir):
        data = file.path.read_bytes()
        if file.compressed:
            data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).readall()
        lines += data.splitlines()
    return lines


@pytest.mark.slow
def test_archiving_under_appends_and_kill_9_loses_nothing_and_doubles_nothing(
    short_tmp: Path, data_dir: Path
) -> None:
    write_shard(data_dir, CLOSED, month_lines(CLOSED, 20_000))
    acked: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def keep_writing(write: Any, seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                rows = [late_row(rng) for _ in range(rng.randint(1, 20))] + [make_row()]
                acked.extend(write(rows))
                time.sleep(rng.uniform(0, 0.02))
        except BaseException as exc:  # surfaced by the assertion below
            failures.append(exc)

    with running_daemon(short_tmp / "s.sock", data_dir) as daemon:

        def via_daemon(rows: list[dict[str, Any]]) -> list[str]:
            replies = daemon.send_rows(rows)
            ok = [reply == {"ok": True} for reply in replies]  # fewer replies: not acked
            return [r["run_id"] for r, acked in zip(rows, ok, strict=False) if acked]

        def direct(rows: list[dict[str, Any]]) -> list[str]:
            try:
                append_rows(data_dir, [validate(r) for r in rows], lock_timeout=30)
            except StoreError:
                return []  # not acknowledged: nothing to find later
            return [r["run_id"] for r in rows]

        writers = [
            threading.Thread(target=keep_writing, args=(via_daemon, 1)),
            threading.Thread(target=keep_writing, args=(direct, 2)),
        ]
        for writer in writers:
            writer.start()
        rng = random.Random(3)
        kills = completed = 0
        deadline = time.monotonic() + RACE_SECONDS
        try:
            while time.monotonic() < deadline:
                archiver = subprocess.Popen(
                    [MANTIS, "runs", "archive", "--keep-months", "1", "--data-dir", data_dir],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                try:
                    _, err = archiver.communicate(timeout=rng.uniform(0.05, 1.5))
                    assert archiver.returncode == 0, err
                    completed += 1
                except subprocess.TimeoutExpired:
                    archiver.kill()  # SIGKILL, wherever it is
                    archiver.communicate()
                    kills += 1
        finally:
            stop.set()
            for writer in writers:
                writer.join(60)
    assert not failures, failures
    assert kills and completed, (kills, completed)
    final = subprocess.run(
        [MANTIS, "runs", "archive", "--keep-months", "1", "--data-dir", data_dir],
        capture_output=True,
        text=True,
    )
    assert final.returncode == 0, final.stderr
    report = ScanReport()
    seen = [row.run_id for row in Scanner(CheckedRow).scan(data_dir, report)]
    assert not set(acked) - set(seen), "acknowledged rows lost"
    assert report.duplicates == 0 and report.bad_lines == 0 and not report.damaged
    lines = every_line(data_dir)
    assert len(lines) == len(set(lines)) == len(seen), "a line stored twice"
    assert len(acked) > 100 and any(f.compressed for f in list_log_files(data_dir))
