"""Many buckets, one verdict each: the Holm-Bonferroni correction across one comparison.

`compare` runs one test per bucket (ten or more with `total_time_s`, times the groups of
`--by`). At alpha 0.05 each, a comparison where nothing changed still shows a false
"regressed" about four times in ten (1 - 0.95^10 for independent buckets). Benchstat
documents the problem and leaves it open; here the p-values of every test of one comparison
(all buckets of all groups) are Holm-adjusted by default, and a verdict is significant when its
adjusted p is below alpha.

Why Holm and not Benjamini-Hochberg. The question behind `compare` (and behind
`--fail-on-regression`, which gates deploys) is "did anything regress?": one false alarm
stops a release, so the error to bound is the chance of *any* false verdict, the family-wise
error rate. Holm bounds it at alpha, and does so under any dependence between the tests,
which matters here: buckets are correlated (`total_time_s` is their sum plus overhead, a slow
pod slows every bucket, a failed run is cut short everywhere). Benjamini-Hochberg bounds the
expected share of false verdicts among the reported ones instead, a weaker promise that suits
screening thousands of tests, and it needs positive dependence to hold. With ten-odd tests
and usually one real change, Holm costs little power: the smallest p needs p < alpha/m, and a
real regression over hundreds of runs has p far below that.

`--correction none` gives the raw per-bucket verdicts (benchstat's behaviour).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final

from mantisd.stats.comparison import BucketComparison, verdict

HOLM: Final = "holm"
NONE: Final = "none"
#: `--correction` values.
CORRECTIONS: Final = (HOLM, NONE)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given.

    Sorted ascending, the i-th smallest (0-based) of m is multiplied by m - i; adjusted values
    are made non-decreasing in that order (a running maximum) and capped at 1, so that
    "adjusted p < alpha" is exactly Holm's step-down rule at level alpha.
    """
    m = len(p_values)
    order = sorted(range(m), key=p_values.__getitem__)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def correct(
    comparisons: Sequence[Sequence[BucketComparison]],
    *,
    method: str,
    alpha: float,
    min_effect: float,
) -> list[list[BucketComparison]]:
    """Every comparison of one family (a list per group) with `p_adjusted` and its verdict.

    The family is every bucket with a p-value, across all groups. `method` `none` leaves the
    rows as they are (`p_adjusted` None).
    """
    if method == NONE:
        return [list(rows) for rows in comparisons]
    if method != HOLM:
        raise ValueError(f"unknown correction {method!r}: one of {', '.join(CORRECTIONS)}")
    tested = [row for rows in comparisons for row in rows if row.p_value is not None]
    adjusted = dict(zip(map(id, tested), holm([row.p_value or 0.0 for row in tested]), strict=True))

    def one(row: BucketComparison) -> BucketComparison:
        p = adjusted.get(id(row))
        if p is None:
            return row
        return dataclasses.replace(
            row,
            p_adjusted=p,
            verdict=verdict(row.baseline, row.current, p, alpha=alpha, min_effect=min_effect),
        )

    return [[one(row) for row in rows] for rows in comparisons]
