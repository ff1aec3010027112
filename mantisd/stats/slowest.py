"""From a percentile to the runs behind it: the slowest runs, and the run nearest a percentile.

`mantis runs slowest` ranks the selected runs by one bucket (or `total_time_s`, or a cost
component) and shows the top ones with what a post-mortem starts from; `stats --exemplars`
names, per bucket, the run whose value is nearest the p95 and the p99. Both read the runs with
`iter_runs`, so they see exactly the runs the percentiles were taken over.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mantisd.schema import TOTAL
from mantisd.stats.grouping import GroupKey
from mantisd.stats.runs import RunView

#: How many of a slow run's other buckets the table shows.
TOP_OTHERS = 3


def slowest(runs: Iterable[RunView], bucket: str, count: int) -> list[RunView]:
    """The `count` runs with the largest `bucket`, largest first; equal values newest first
    (runs come newest first). Runs that do not report the bucket are not ranked."""
    reporting = (run for run in runs if bucket in run.values)
    return heapq.nlargest(count, reporting, key=lambda run: run.values[bucket])


def other_top(run: RunView, bucket: str, count: int = TOP_OTHERS) -> list[tuple[str, float]]:
    """The run's largest other values (never `total_time_s`), largest first, ties by name."""
    others = [(name, v) for name, v in run.values.items() if name not in (bucket, TOTAL)]
    return sorted(others, key=lambda item: (-item[1], item[0]))[:count]


def other_values(run: RunView, bucket: str) -> list[tuple[str, float]]:
    """Every other value of the run, by name (cost components: their units do not compare)."""
    return sorted((name, v) for name, v in run.values.items() if name != bucket)


@dataclass(frozen=True)
class Exemplar:
    """The run nearest a percentile of a bucket, and its own value."""

    run_id: str
    value: float


#: `targets[key][bucket][p]`: the value of percentile p of a bucket in a group.
Targets = Mapping[GroupKey, Mapping[str, Mapping[int, float]]]
Exemplars = dict[GroupKey, dict[str, dict[int, Exemplar]]]


def nearest_runs(runs: Iterable[RunView], targets: Targets) -> Exemplars:
    """For each group, bucket and percentile of `targets`: the run whose value is nearest.

    On a tie the newer run wins (runs come newest first). A bucket no run of its group
    reports is left out.
    """
    best: dict[tuple[GroupKey, str, int], tuple[float, Exemplar]] = {}
    for run in runs:
        for bucket, wanted in targets.get(run.key, {}).items():
            value = run.values.get(bucket)
            if value is None:
                continue
            for p, target in wanted.items():
                slot = (run.key, bucket, p)
                distance = abs(value - target)
                if slot not in best or distance < best[slot][0]:
                    best[slot] = (distance, Exemplar(run.run_id, value))
    found: Exemplars = {}
    for (key, bucket, p), (_, exemplar) in best.items():
        found.setdefault(key, {}).setdefault(bucket, {})[p] = exemplar
    return found
