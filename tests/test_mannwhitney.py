"""The Mann-Whitney U test against hand-computed cases, table values and SciPy (test-only)."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats

from mantisd.stats.mannwhitney import mann_whitney_u


def samples_with_u(n1: int, n2: int, u: int) -> tuple[list[float], list[float]]:
    """Two tie-free samples whose U (of the first) is exactly `u`."""
    # x ranks below every y, then move x's largest values up past `u` of the y's in total.
    x = [float(i) for i in range(n1)]
    y = [float(n1 + j) + 0.5 for j in range(n2)]
    remaining = u
    for i in reversed(range(n1)):
        step = min(remaining, n2)
        x[i] = y[step - 1] + 0.25 if step else x[i]
        remaining -= step
    assert remaining == 0
    return x, y


def test_completely_separated_samples_by_hand() -> None:
    # U = 0; exactly 1 of C(6,3) = 20 arrangements is that extreme on each side: p = 2/20.
    result = mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert result.u == 0
    assert result.method == "exact"
    assert result.p_value == pytest.approx(0.1)


def test_one_against_two_by_hand() -> None:
    result = mann_whitney_u([1, 2], [3])
    assert result.u == 0
    assert result.p_value == pytest.approx(2 / 3)


def test_ties_by_hand() -> None:
    # ranks 1.5 1.5 3.5 | 3.5 5.5 5.5 -> U1 = 6.5 - 6 = 0.5; tie term 18/30; var = 0.75 * 6.4;
    # z = (8.5 - 4.5 - 0.5) / sqrt(4.8) -> p = erfc(z / sqrt 2) = 0.110149
    result = mann_whitney_u([1, 1, 2], [2, 3, 3])
    assert result.u == 0.5
    assert result.method == "asymptotic"
    assert result.p_value == pytest.approx(0.1101489, abs=1e-6)


@pytest.mark.parametrize(
    ("n", "critical"),
    [(5, 2), (8, 13), (10, 23)],  # published two-sided alpha = 0.05 critical values of U
)
def test_published_critical_values(n: int, critical: int) -> None:
    at = mann_whitney_u(*samples_with_u(n, n, critical), method="exact")
    above = mann_whitney_u(*samples_with_u(n, n, critical + 1), method="exact")
    assert at.u == critical and above.u == critical + 1
    assert at.p_value is not None and above.p_value is not None
    assert at.p_value <= 0.05 < above.p_value


def test_n_equal_one_and_empty_samples() -> None:
    assert mann_whitney_u([], [1.0, 2.0]).p_value is None
    assert mann_whitney_u([1.0], []).p_value is None
    one = mann_whitney_u([5.0], [1.0, 2.0, 3.0])
    assert one.u == 3 and one.p_value == pytest.approx(0.5)  # 2 * P(U = 3) = 2 * 1/4


def test_all_values_tied_is_not_a_difference() -> None:
    assert mann_whitney_u([2.0] * 10, [2.0] * 12).p_value == 1.0


@pytest.mark.parametrize("method", ["exact", "asymptotic"])
def test_agrees_with_scipy_on_random_samples(method: str) -> None:
    rng = random.Random(20261128)
    for trial in range(200):
        n1, n2 = rng.randint(1, 15), rng.randint(1, 15)
        with_ties = method == "asymptotic" and trial % 2 == 0

        def draw(shift: float, _ties: bool = with_ties) -> float:
            return float(rng.randint(0, 6)) + shift if _ties else rng.lognormvariate(0, 1) + shift

        shift = 0.7 if trial % 3 == 0 else 0.0
        x = [draw(0.0) for _ in range(n1)]
        y = [draw(shift) for _ in range(n2)]
        ours = mann_whitney_u(x, y, method=method)
        ref = stats.mannwhitneyu(x, y, alternative="two-sided", method=method)
        assert ours.u == pytest.approx(float(ref.statistic))
        assert ours.p_value == pytest.approx(float(ref.pvalue), rel=1e-9, abs=1e-12)


def test_auto_uses_the_normal_approximation_for_large_samples() -> None:
    rng = random.Random(7)
    x = [rng.gauss(10, 1) for _ in range(300)]
    y = [rng.gauss(10.3, 1) for _ in range(280)]
    ours = mann_whitney_u(x, y)
    ref = stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic")
    assert ours.method == "asymptotic"
    assert ours.p_value == pytest.approx(float(ref.pvalue), rel=1e-9)
    assert not math.isnan(ours.u)


def test_unknown_method_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        mann_whitney_u([1.0], [2.0], method="bootstrap")


def test_auto_chooses_as_scipy_does_around_eight() -> None:
    """SciPy's auto: exact when a sample has at most 8 values and nothing is tied."""
    rng = random.Random(8)
    for n1, n2 in [(8, 8), (8, 30), (9, 9), (7, 12), (9, 40)]:
        x = [rng.random() for _ in range(n1)]
        y = [rng.random() + 0.3 for _ in range(n2)]
        ours = mann_whitney_u(x, y)
        assert ours.method == ("exact" if min(n1, n2) <= 8 else "asymptotic")
        ref = stats.mannwhitneyu(x, y, alternative="two-sided", method="auto")
        assert ours.p_value == pytest.approx(float(ref.pvalue), rel=1e-9)


def test_a_lopsided_pair_is_not_counted_exactly() -> None:
    """3 values against 100,000: the exact distribution would cost seconds; the normal
    approximation answers at once."""
    ours = mann_whitney_u([1.0, 2.0, 3.0], [float(i) + 0.5 for i in range(100_000)])
    assert ours.method == "asymptotic" and ours.p_value is not None
