"""Percentiles by linear interpolation between closest ranks.

The same method as numpy's default and `statistics.quantiles(data, n=100,
method="inclusive")`, computed the way `statistics` does (integer rank arithmetic). Two
differences: a rank that falls exactly on a value returns that value (statistics computes
`x * 100 / 100`, which can be off in the last bit), and one value is fine (it is every
percentile; `statistics.quantiles` wants two).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence

#: The percentiles `mantis runs stats` reports.
REPORTED = (50, 95, 99)


def percentile(ordered: Sequence[float], p: int) -> float:
    """The `p`-th percentile (0..100) of an already sorted, non-empty sequence."""
    n = len(ordered)
    if n == 0:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0..100")
    j, delta = divmod(p * (n - 1), 100)
    if delta == 0:
        return ordered[j]
    return (ordered[j] * (100 - delta) + ordered[j + 1] * delta) / 100


def percentiles(values: Iterable[float], ps: Sequence[int] = REPORTED) -> tuple[float, ...]:
    """Several percentiles of unsorted `values` (sorted once)."""
    ordered = sorted(values)
    return tuple(percentile(ordered, p) for p in ps)


def kth_smallest(runs: Sequence[Sequence[float]], k: int) -> float:
    """The `k`-th smallest value (0-based) of several sorted sequences, without merging them.

    Narrows a candidate range in each run around a pivot (the middle of the widest range),
    counting with `bisect` across runs: O(runs² · log n) probes, nothing copied.
    """
    lows = [0] * len(runs)
    highs = [len(run) for run in runs]
    if not 0 <= k < sum(highs):
        raise ValueError(f"rank {k} is outside the {sum(highs)} values")
    while True:
        widest = max(range(len(runs)), key=lambda i: highs[i] - lows[i])
        pivot = runs[widest][(lows[widest] + highs[widest]) // 2]
        below = [bisect_left(run, pivot) for run in runs]
        if k < sum(below):
            highs = [min(h, b) for h, b in zip(highs, below, strict=True)]
            continue
        through = [bisect_right(run, pivot) for run in runs]
        if k < sum(through):
            return pivot
        lows = [max(low, t) for low, t in zip(lows, through, strict=True)]


def percentiles_of_runs(
    runs: Sequence[Sequence[float]], ps: Sequence[int] = REPORTED
) -> tuple[float, ...]:
    """`percentiles` of the union of already sorted runs (e.g. one per month shard).

    Same ranks and formula as `percentile`, so the same floats as sorting everything.
    """
    runs = [run for run in runs if len(run)]
    if len(runs) == 1:
        return tuple(percentile(runs[0], p) for p in ps)
    n = sum(map(len, runs))
    if n == 0:
        raise ValueError("percentile of no values")
    result = []
    for p in ps:
        if not 0 <= p <= 100:
            raise ValueError(f"percentile {p} is outside 0..100")
        j, delta = divmod(p * (n - 1), 100)
        low = kth_smallest(runs, j)
        if delta == 0:
            result.append(low)
        else:
            high = kth_smallest(runs, j + 1)
            result.append((low * (100 - delta) + high * delta) / 100)
    return tuple(result)
