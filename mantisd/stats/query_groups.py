"""The file source's answer to a grouped query (`StatsQuery.by`): one `Selection` per group.

`last` counts in each group: the N most recently logged runs of every group. A group may show
up only in the oldest shard of the window, so a grouped query reads every shard of its window
(in parallel, as `select_periods` does); each shard keeps at most N runs per group, and shards
are merged newest first, a `run_id` seen in a newer shard dropped from older ones whatever its
group.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mantisd.reader import ScanReport
from mantisd.stats.fanout import default_workers, fan_out
from mantisd.stats.grouping import GroupKey, busiest_first, key_getter
from mantisd.stats.query import (
    Selection,
    ShardPart,
    StatsQuery,
    _gc_paused,
    _matching,
    _merge,
    _scan_shard,
    collect,
    shard_months,
)


@dataclass
class Groups:
    """Each group's selection (groups with at least one run), and what the scan skipped."""

    selections: dict[GroupKey, Selection] = field(default_factory=dict)
    report: ScanReport = field(default_factory=ScanReport)

    @property
    def run_count(self) -> int:
        return sum(s.run_count for s in self.selections.values())

    @property
    def ignored(self) -> int:
        return sum(s.ignored for s in self.selections.values())

    def busiest_first(self) -> list[tuple[GroupKey, Selection]]:
        """The groups by run count, largest first (ties by key)."""
        order = busiest_first((key, s.run_count) for key, s in self.selections.items())
        return [(key, self.selections[key]) for key in order]


def select_groups(
    data_dir: Path,
    query: StatsQuery,
    *,
    on_shard: Callable[[int, int, str], None] | None = None,
    workers: int | None = None,
) -> Groups:
    """The last `query.last` runs of each group of `query.by` (no `by`: one group, key `()`)."""
    months = shard_months(data_dir, query)
    groups = Groups()
    seen: set[int] = set()
    work = functools.partial(read_shard_groups, data_dir, query=query)
    results = fan_out(work, months, workers=workers or default_workers())
    with _gc_paused(), contextlib.closing(results):
        for index, (month, (report, parts)) in enumerate(zip(months, results, strict=True)):
            if on_shard:
                on_shard(index, len(months), month)
            groups.report.add(report)
            for key, part in parts.items():
                selection = groups.selections.setdefault(key, Selection())
                _merge(selection, part, seen, query.last)
    groups.report.duplicates += sum(s.report.duplicates for s in groups.selections.values())
    groups.selections = {k: s for k, s in groups.selections.items() if s.run_count}
    return groups


def read_shard_groups(
    data_dir: Path, month: str, *, query: StatsQuery
) -> tuple[ScanReport, dict[GroupKey, ShardPart]]:
    """One shard's newest `query.last` matching runs of each group."""
    report = ScanReport()
    parts: dict[GroupKey, ShardPart] = {}
    key_of = key_getter(query.by)
    blocks = _scan_shard(data_dir, month, query, report)
    try:
        for rows in blocks:
            chunks: dict[GroupKey, list[Any]] = {}
            for row in _matching(rows, query):
                chunks.setdefault(key_of(row), []).append(row)
            for key, chunk in chunks.items():
                part = parts.setdefault(key, ShardPart())
                room = query.last - len(part.keys)
                if room > 0:
                    collect(chunk[:room], part, query.breakdown)
    finally:
        blocks.close()
    for part in parts.values():
        part.sort_columns()
    return report, parts
