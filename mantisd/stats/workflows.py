"""Which workflows the log holds: each one's run count, failed count and newest `finished_at`.

What `mantis runs list` prints, and where `stats` looks for the ids nearest to one it cannot
find. Rows are read as `stats` reads them: lines `validate` would refuse are skipped and
counted (`CheckedRow`), and a `run_id` logged twice counts once, by its newest line.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from mantisd.reader import CheckedRow, Scanner, ScanReport


@dataclass
class WorkflowSummary:
    """One workflow's runs in the log (or in the window asked for)."""

    workflow_id: str
    run_count: int = 0
    failed: int = 0
    last_finished_at: dt.datetime | None = None

    def add(self, status: str, finished_at: dt.datetime) -> None:
        self.run_count += 1
        if status == "failed":
            self.failed += 1
        if self.last_finished_at is None or finished_at > self.last_finished_at:
            self.last_finished_at = finished_at


def summarize(
    data_dir: Path,
    report: ScanReport,
    *,
    since: dt.datetime | None = None,
    on_shard: Callable[[int, int, str], None] | None = None,
) -> list[WorkflowSummary]:
    """Every workflow with a run finished at or after `since` (all when None), busiest first
    (ties by id). Shards older than the month of `since` are never opened."""
    oldest = None
    if since is not None:
        utc = since.astimezone(dt.UTC)
        oldest = f"{utc.year:04d}-{utc.month:02d}"
    found: dict[str, WorkflowSummary] = {}
    blocks = Scanner(CheckedRow).scan_blocks(
        data_dir, report, oldest_month=oldest, on_shard=on_shard
    )
    try:
        for rows in blocks:
            for row in rows:
                if since is not None and row.finished_at < since:
                    continue
                summary = found.get(row.workflow_id)
                if summary is None:
                    summary = found[row.workflow_id] = WorkflowSummary(row.workflow_id)
                summary.add(row.status, row.finished_at)
    finally:
        blocks.close()
    return sorted(found.values(), key=lambda s: (-s.run_count, s.workflow_id))


def nearest(workflow_id: str, known: Iterable[str], *, count: int = 3) -> list[str]:
    """The known ids closest to `workflow_id` (difflib's ratio, at least 0.6), best first."""
    return difflib.get_close_matches(workflow_id, list(known), n=count, cutoff=0.6)
