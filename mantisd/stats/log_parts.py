"""Months the cache cannot answer, read from the log as `mantisd.stats.query` reads them,
their runs keyed as the cache keys them (`mantisd.stats.run_keys`), so that `_merge` drops a
run seen in another month whichever way each month was read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mantisd.reader import ScanReport
from mantisd.stats.costs import WALL_TIME
from mantisd.stats.month_view import micros
from mantisd.stats.query import (
    ShardPart,
    StatsQuery,
    _matching,
    _scan_shard,
    collect,
    read_shard,
)
from mantisd.stats.run_keys import run_keys
from mantisd.stats.segment import Array


def _collect(rows: list[Any], part: ShardPart) -> None:
    """`collect` with the cache's keys instead of `hash(run_id)`."""
    before = len(part.keys)
    collect(rows, part, WALL_TIME)
    del part.keys[before:]
    part.keys.extend(run_keys([row.run_id for row in rows]).tolist())


def read_month(data_dir: Path, month: str, query: StatsQuery, cap: int) -> ShardPart:
    """`read_shard`, keyed as the cache keys runs."""
    return read_shard(data_dir, month, query=query, cap=cap, add=_collect)


def read_month_periods(
    data_dir: Path, month: str, query: StatsQuery, edges: Array
) -> tuple[ScanReport, list[ShardPart]]:
    """`read_shard_periods`, keyed as the cache keys runs."""
    report = ScanReport()
    parts = [ShardPart() for _ in range(len(edges) - 1)]
    blocks = _scan_shard(data_dir, month, query, report)
    try:
        for rows in blocks:
            rows = _matching(rows, query)
            periods = np.searchsorted(edges, [micros(r.finished_at) for r in rows], "right") - 1
            for period in np.unique(periods).tolist():
                chosen = np.flatnonzero(periods == period).tolist()
                _collect([rows[i] for i in chosen], parts[period])
    finally:
        blocks.close()
    for part in parts:
        part.sort_columns()
    return report, parts
