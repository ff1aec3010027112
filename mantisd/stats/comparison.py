"""Baseline window against current window, bucket by bucket: which bucket regressed?

As Go's benchstat does it, a difference is called a change only when it is significant: the
two-sided Mann-Whitney U test on the two samples gives p < alpha, *and* the p50 moved by more
than a minimum relative effect (a tiny shift in a huge sample is significant and irrelevant).
Slower is "regressed", faster "improved", anything else "~"; a bucket one window has no value
for cannot be compared ("n/a").
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from mantisd.schema import TOTAL
from mantisd.stats.fanout import fan_out
from mantisd.stats.mannwhitney import mann_whitney_u
from mantisd.stats.percentiles import percentile

REGRESSED: Final = "regressed"
IMPROVED: Final = "improved"
UNCHANGED: Final = "~"
NOT_COMPARABLE: Final = "n/a"
#: Below this many values in all (both windows, every bucket) forking costs more than it saves.
PARALLEL_FROM: Final = 200_000
SortedRuns: TypeAlias = "Mapping[str, Sequence[array[float]]]"


@dataclass(frozen=True)
class Side:
    """One window's sample of one bucket: its size, p50 and p95 (None when empty)."""

    n: int
    p50: float | None
    p95: float | None


@dataclass(frozen=True)
class BucketComparison:
    """One row of `compare`: both sides, the relative changes, the test and its verdict.

    A change is `(current - baseline) / baseline`; None when a side is empty, or when the
    baseline is 0 and the current is not (an infinite change). `p_adjusted`: the p-value
    corrected for the other tests of the comparison (`mantisd.stats.multiple`), which the
    verdict then follows; None when uncorrected.
    """

    bucket: str
    baseline: Side
    current: Side
    p50_change: float | None
    p95_change: float | None
    p_value: float | None
    verdict: str
    p_adjusted: float | None = None


def merged(runs: Sequence[array[float]]) -> Sequence[float]:
    """The union of sorted runs, sorted (one run is returned as is).

    Concatenation then `sorted`: Timsort finds the runs and merges them at C speed, which beats
    `heapq.merge`'s Python-level iteration several times over.
    """
    runs = [run for run in runs if len(run)]
    if len(runs) == 1:
        return runs[0]
    return sorted(itertools.chain.from_iterable(runs))


def relative_change(before: float | None, after: float | None) -> float | None:
    """`(after - before) / before`; 0 when both are 0, None when undefined or infinite."""
    if before is None or after is None:
        return None
    if before == 0:
        return 0.0 if after == 0 else None
    return (after - before) / before


def verdict(
    baseline: Side, current: Side, p_value: float | None, *, alpha: float, min_effect: float
) -> str:
    """`regressed` / `improved` when p < alpha and the p50 moved by more than `min_effect`."""
    if p_value is None or baseline.p50 is None or current.p50 is None:
        return NOT_COMPARABLE
    if p_value >= alpha:
        return UNCHANGED
    change = relative_change(baseline.p50, current.p50)
    if change is None:  # from 0 to something: an infinite slowdown
        change = math.inf
    if change > min_effect:
        return REGRESSED
    if change < -min_effect:
        return IMPROVED
    return UNCHANGED


def compare_bucket(
    bucket: str,
    baseline_runs: Sequence[array[float]],
    current_runs: Sequence[array[float]],
    *,
    alpha: float,
    min_effect: float,
) -> BucketComparison:
    """Compare one bucket's two samples, each given as sorted runs (see `Selection`)."""
    before, after = merged(baseline_runs), merged(current_runs)
    base, cur = _side(before), _side(after)
    p_value = mann_whitney_u(before, after).p_value if before and after else None
    return BucketComparison(
        bucket=bucket,
        baseline=base,
        current=cur,
        p50_change=relative_change(base.p50, cur.p50),
        p95_change=relative_change(base.p95, cur.p95),
        p_value=p_value,
        verdict=verdict(base, cur, p_value, alpha=alpha, min_effect=min_effect),
    )


def compare_buckets(
    baseline: SortedRuns,
    current: SortedRuns,
    buckets: Iterable[str],
    *,
    alpha: float,
    min_effect: float,
    workers: int = 1,
    total: bool = True,
) -> list[BucketComparison]:
    """`buckets` compared and ordered: see `ordered`. `total_time_s` is there, last, unless
    `total` is False (cost components have no total).

    With `workers` > 1 the buckets are compared in forked processes (they inherit the samples;
    only the results travel): ranking two 100k-run samples costs ~50 ms per bucket.
    """

    def one(bucket: str) -> BucketComparison:
        return compare_bucket(
            bucket,
            baseline.get(bucket, ()),
            current.get(bucket, ()),
            alpha=alpha,
            min_effect=min_effect,
        )

    names = list(dict.fromkeys([*buckets, TOTAL] if total else buckets))
    size = sum(len(run) for b in names for side in (baseline, current) for run in side.get(b, ()))
    if size < PARALLEL_FROM:
        workers = 1
    return ordered(fan_out(one, names, workers=workers))


def ordered(rows: Iterable[BucketComparison]) -> list[BucketComparison]:
    """Regressions first, largest p50 increase first; then every other bucket by p50 change,
    largest first (creeping slowdowns near the top, improvements at the bottom); buckets
    without a p50 change after them; `total_time_s` last, as in `stats`."""
    rows = list(rows)
    total = [r for r in rows if r.bucket == TOTAL]
    others = [r for r in rows if r.bucket != TOTAL]

    def key(row: BucketComparison) -> tuple[bool, bool, float, str]:
        change = row.p50_change
        if change is None and row.verdict == REGRESSED:
            change = math.inf
        return (row.verdict != REGRESSED, change is None, -(change or 0.0), row.bucket)

    return sorted(others, key=key) + total


def _side(sample: Sequence[float]) -> Side:
    if not sample:
        return Side(0, None, None)
    return Side(len(sample), percentile(sample, 50), percentile(sample, 95))
