"""Percentiles by linear interpolation between closest ranks.

The same method as numpy's default and `statistics.quantiles(data, n=100,
method="inclusive")`, computed the way `statistics` does (integer rank arithmetic). Two
differences: a rank that falls exactly on a value returns that value (statistics computes
`x * 100 / 100`, which can be off in the last bit), and one value is fine (it is every
percentile; `statistics.quantiles` wants two).
"""

from __future__ import annotations

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
