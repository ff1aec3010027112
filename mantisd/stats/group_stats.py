"""The page's stats for each group of a grouped query (one group, key `()`, when ungrouped).

What every output format of `stats` shows of a group: its run count, p50/p95/p99 per bucket in
the table's order, how many runs reported each bucket, and with `--exemplars` the run nearest
each bucket's p95 and p99.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from mantisd.stats.grouping import GroupKey
from mantisd.stats.percentiles import REPORTED
from mantisd.stats.query import Selection
from mantisd.stats.slowest import Exemplar, Exemplars, Targets
from mantisd.stats.summary import BucketStats, bucket_stats

#: The percentiles `--exemplars` finds a run for.
EXEMPLAR_PERCENTILES: Final = (95, 99)


@dataclass
class GroupStats:
    """One group's line of output: `stats` in table order, `counts` of reporting runs."""

    key: GroupKey
    run_count: int
    stats: list[BucketStats]
    counts: dict[str, int]
    exemplars: dict[str, dict[int, Exemplar]] = field(default_factory=dict)


def group_stats(
    key: GroupKey, selection: Selection, buckets: Sequence[str], *, total: bool = True
) -> GroupStats:
    table = bucket_stats(selection.sorted_runs, buckets, total=total)
    counts = {s.bucket: selection.count(s.bucket) for s in table}
    return GroupStats(key, selection.run_count, table, counts)


def exemplar_targets(groups: Sequence[GroupStats]) -> Targets:
    """Each group's p95 and p99 per bucket: what `nearest_runs` looks for."""
    return {
        g.key: {
            s.bucket: {p: s.values[REPORTED.index(p)] for p in EXEMPLAR_PERCENTILES}
            for s in g.stats
            if s.values is not None
        }
        for g in groups
    }


def attach_exemplars(groups: Sequence[GroupStats], found: Exemplars) -> None:
    for g in groups:
        g.exemplars = found.get(g.key, {})
