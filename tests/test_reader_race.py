"""Readers racing writers that roll back on a full disk (a real 2 MiB tmpfs, needs root).

Writers that hit ENOSPC write part of their batch, then `ftruncate` it away. A scan that
sized the shard before the truncation used to end the shard at its first short read and
report nothing: `mantis runs stats` said "no succeeded runs" with every row on disk.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mantisd.paths import shard_path
from mantisd.reader import KeyedRow, Scanner, ScanReport
from mantisd.schema import validate
from mantisd.store import append
from tests.full_disk import mounted_tmpfs
from tests.rows import make_row

#: Appends batches of big rows to the shard until the stop file exists; prints its outcomes.
CHILD_FILLER = """
import json, sys
from pathlib import Path
from mantisd.schema import validate
from mantisd.store import StoreError, append
shard, stop, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
template = json.loads(sys.argv[4])
ok = failed = i = 0
while not stop.exists():
    rows = [validate(dict(template, run_id=f"{name}-{i}-{k}", padding="p" * 60000))
            for k in range(1 + i % 6)]
    i += 1
    try:
        append(shard, b"".join(row.line for row in rows))
        ok += 1
    except StoreError:
        failed += 1
print(json.dumps({"ok": ok, "failed": failed}))
"""


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "tmpfs", "size=2m,mode=0755") as mountpoint:
        yield mountpoint


class IdOnly(KeyedRow):
    """Nothing but the run_id: the scan costs little, so many scans meet the writers."""


@pytest.mark.slow
def test_scans_racing_rollbacks_on_a_full_disk_never_lose_stored_rows(
    small_tmpfs: Path, tmp_path: Path
) -> None:
    template = make_row(created_at="2026-01-15T11:00:00Z", finished_at="2026-01-15T12:00:00Z")
    shard = shard_path(small_tmpfs, "2026-01")
    stored = [validate(dict(template, run_id=f"stored-{i:04d}")) for i in range(1500)]
    append(shard, b"".join(row.line for row in stored))
    expected = {row.run_id for row in stored}
    stop = tmp_path / "stop"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD_FILLER, str(shard), str(stop), f"w{n}"]
            + [json.dumps(template)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    scans, short = 0, []
    try:
        started = time.monotonic()
        while scans < 600 and time.monotonic() - started < 30:
            report = ScanReport()
            seen = {row.run_id for row in Scanner(IdOnly).scan(small_tmpfs, report)}
            missing = len(expected - seen)
            if missing:
                short.append(missing)
            scans += 1
    finally:
        stop.touch()
        outcomes = [json.loads(w.communicate(timeout=60)[0]) for w in writers]
    assert all(w.returncode == 0 for w in writers)
    assert sum(o["failed"] for o in outcomes) > 0, "the disk really filled up: rollbacks ran"
    assert short == [], f"{len(short)} of {scans} scans lost stored rows"
