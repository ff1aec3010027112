"""Two-sided Mann-Whitney U test, tie-corrected, in the standard library.

`compare` calls a bucket regressed only when its two samples differ significantly, as Go's
benchstat does. Rank tests suit wall times: skewed, heavy-tailed, no normality to assume.
SciPy would do it, but the stats CLI must stay light, so this is the textbook method:
the exact null distribution for small tie-free samples, else the normal approximation
with the tie correction and a continuity correction (SciPy's `method="auto"` choices).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

#: Up to this size (either sample) and without ties the exact distribution is used (SciPy's
#: rule), unless the pair is so lopsided that counting it would cost more than it is worth.
EXACT_UP_TO = 8
EXACT_MAX_CELLS = 100_000


@dataclass(frozen=True)
class UTest:
    """U of the first sample, and the two-sided p-value (None when a sample is empty)."""

    u: float
    p_value: float | None
    method: str


def mann_whitney_u(x: Sequence[float], y: Sequence[float], *, method: str = "auto") -> UTest:
    """Two-sided test that `x` and `y` come from the same distribution.

    `method`: "exact", "asymptotic" or "auto" (exact when a sample has at most `EXACT_UP_TO`
    values, there are no ties, and n1 * n2 is at most `EXACT_MAX_CELLS`).
    """
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return UTest(math.nan, None, "none")
    ranks, tie_sizes = _rank([*x, *y])
    u1 = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    big_u = max(u1, n1 * n2 - u1)
    if method == "auto":
        small = min(n1, n2) <= EXACT_UP_TO and n1 * n2 <= EXACT_MAX_CELLS
        method = "exact" if small and not tie_sizes else "asymptotic"
    if method == "exact":
        p = _exact_p(n1, n2, big_u)
    elif method == "asymptotic":
        p = _asymptotic_p(n1, n2, big_u, tie_sizes)
    else:
        raise ValueError(f"unknown method {method!r}")
    return UTest(u1, min(1.0, p), method)


def _rank(values: list[float]) -> tuple[list[float], list[int]]:
    """Average ranks (1-based) and the sizes of tie groups larger than one."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        average = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[order[k]] = average
        if j > i:
            ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def _asymptotic_p(n1: int, n2: int, big_u: float, tie_sizes: list[int]) -> float:
    n = n1 + n2
    tie_term = sum(t**3 - t for t in tie_sizes) / (n * (n - 1)) if n > 1 else 0.0
    variance = n1 * n2 / 12 * ((n + 1) - tie_term)
    if variance <= 0:
        return 1.0  # every value tied: no evidence of a difference
    z = (big_u - n1 * n2 / 2 - 0.5) / math.sqrt(variance)
    return math.erfc(z / math.sqrt(2))  # = 2 * (1 - Phi(z))


def _exact_p(n1: int, n2: int, big_u: float) -> float:
    counts = _u_counts(min(n1, n2), max(n1, n2))
    # P(U >= big_u) by symmetry equals P(U <= n1*n2 - big_u)
    upper = sum(counts[: int(math.floor(n1 * n2 - big_u)) + 1])
    return 2 * upper / math.comb(n1 + n2, n1)


@lru_cache(maxsize=8)
def _u_counts(m: int, n: int) -> tuple[int, ...]:
    """How many arrangements give each U, 0..m*n: the coefficients of the Gaussian binomial
    [m+n choose m]_q = prod_{i=1..m} (1 - q^(n+i)) / (1 - q^i), as truncated power series."""
    size = m * n + 1
    c = [0] * size
    c[0] = 1
    for i in range(1, m + 1):
        k = n + i
        for u in range(size - 1, k - 1, -1):
            c[u] -= c[u - k]
        for u in range(i, size):
            c[u] += c[u - i]
    return tuple(c)
