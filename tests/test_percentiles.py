"""Percentiles: linear interpolation between closest ranks, checked against `statistics`."""

from __future__ import annotations

import random
import statistics

import pytest

from mantisd.stats.percentiles import kth_smallest, percentile, percentiles, percentiles_of_runs


def reference(values: list[float]) -> list[float]:
    """`statistics.quantiles(..., method="inclusive")`: cut points 1..99 (needs 2+ values)."""
    return statistics.quantiles(values, n=100, method="inclusive")


@pytest.mark.parametrize("size", [2, 3, 4, 5, 7, 10, 99, 100, 101, 1000])
@pytest.mark.parametrize("seed", range(3))
def test_every_percentile_matches_statistics_on_random_data(size: int, seed: int) -> None:
    rng = random.Random(seed * 1000 + size)
    values = [rng.lognormvariate(3, 1) for _ in range(size)]
    ordered = sorted(values)
    expected = reference(values)
    assert [percentile(ordered, p) for p in range(1, 100)] == pytest.approx(expected, rel=1e-15)
    for p in (50, 95, 99):  # where the rank falls between two values, the very same float
        if p * (size - 1) % 100:
            assert percentile(ordered, p) == expected[p - 1]


@pytest.mark.parametrize("size", [2, 3, 10, 50])
def test_ties_match_statistics(size: int) -> None:
    rng = random.Random(size)
    values = [float(rng.choice([1, 2, 2, 5])) for _ in range(size)]
    ordered = sorted(values)
    assert [percentile(ordered, p) for p in range(1, 100)] == reference(values)


def test_one_value_is_every_percentile() -> None:
    assert percentiles([42.5]) == (42.5, 42.5, 42.5)
    assert percentile([7.0], 0) == percentile([7.0], 100) == 7.0


def test_two_values_median_is_their_midpoint() -> None:
    assert percentiles([10.0, 20.0]) == (15.0, 19.5, 19.9)


def test_odd_length_median_is_the_middle_element() -> None:
    assert percentiles([5.0, 1.0, 3.0], (50,)) == (3.0,)


def test_all_ties() -> None:
    assert percentiles([4.0] * 9) == (4.0, 4.0, 4.0)


def test_unsorted_input_is_sorted_first() -> None:
    values = [9.0, 1.0, 5.0, 3.0, 7.0]
    assert percentiles(values) == percentiles(sorted(values))


def test_matches_numpy_linear_default() -> None:
    import numpy  # a dependency of scipy, the test extra's Mann-Whitney oracle

    rng = random.Random(7)
    values = [rng.uniform(0, 100) for _ in range(257)]
    expected = numpy.percentile(values, [50, 95, 99])
    assert percentiles(values) == pytest.approx(list(expected), rel=1e-12)


@pytest.mark.parametrize("p", [-1, 101])
def test_percentile_outside_range_is_an_error(p: int) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], p)


def test_no_values_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentiles([])


@pytest.mark.parametrize("seed", range(20))
def test_percentiles_of_sorted_runs_equal_sorting_everything(seed: int) -> None:
    rng = random.Random(seed)
    runs = [
        sorted(float(rng.randrange(20)) if seed % 2 else rng.random() for _ in range(size))
        for size in [rng.choice([0, 1, 2, 5, 50, 300]) for _ in range(rng.randint(1, 8))]
    ]
    everything = [v for run in runs for v in run]
    if not everything:
        runs.append([1.5])
        everything = [1.5]
    ps = tuple(range(0, 101))
    assert percentiles_of_runs(runs, ps) == percentiles(everything, ps)
    ordered = sorted(everything)
    assert [kth_smallest(runs, k) for k in range(len(ordered))] == ordered


def test_percentiles_of_no_runs_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentiles_of_runs([[], []])
    with pytest.raises(ValueError):
        kth_smallest([[1.0]], 1)
