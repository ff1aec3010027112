"""The verdict rule, the row order and the samples behind `mantis runs compare`."""

from __future__ import annotations

import math
import random
from array import array

import pytest

from mantisd.stats import comparison
from mantisd.stats.comparison import (
    IMPROVED,
    NOT_COMPARABLE,
    REGRESSED,
    UNCHANGED,
    BucketComparison,
    Side,
    compare_bucket,
    compare_buckets,
    merged,
    ordered,
    relative_change,
    verdict,
)
from mantisd.stats.mannwhitney import mann_whitney_u


def runs(*values: list[float]) -> list[array[float]]:
    return [array("d", sorted(v)) for v in values]


def test_merged_equals_one_sort() -> None:
    rng = random.Random(2)
    parts = runs(*[[rng.random() for _ in range(n)] for n in (300, 0, 1, 50)])
    assert list(merged(parts)) == sorted(v for part in parts for v in part)
    assert merged(runs([3.0, 1.0])) == array("d", [1.0, 3.0])
    assert list(merged([])) == []


@pytest.mark.parametrize(
    ("before", "after", "change"),
    [(10.0, 13.0, 0.3), (10.0, 9.0, -0.1), (0.0, 0.0, 0.0), (0.0, 1.0, None), (None, 1.0, None)],
)
def test_relative_change(before: float | None, after: float | None, change: float | None) -> None:
    result = relative_change(before, after)
    assert result == (None if change is None else pytest.approx(change))


def side(p50: float | None, n: int = 100) -> Side:
    return Side(n if p50 is not None else 0, p50, None if p50 is None else p50 * 2)


@pytest.mark.parametrize(
    ("base", "cur", "p", "expected"),
    [
        (10.0, 13.0, 0.001, REGRESSED),
        (10.0, 13.0, 0.05, UNCHANGED),  # p must be below alpha, not equal
        (10.0, 10.4, 0.001, UNCHANGED),  # significant but smaller than the minimum effect
        (10.0, 10.5, 0.001, UNCHANGED),  # exactly the minimum effect does not exceed it
        (10.0, 10.51, 0.001, REGRESSED),
        (10.0, 8.0, 0.001, IMPROVED),
        (10.0, 8.0, 0.2, UNCHANGED),
        (0.0, 1.0, 0.001, REGRESSED),  # from nothing to something
        (None, 1.0, None, NOT_COMPARABLE),
        (1.0, None, None, NOT_COMPARABLE),
    ],
)
def test_verdict_needs_significance_and_effect(
    base: float | None, cur: float | None, p: float | None, expected: str
) -> None:
    assert verdict(side(base), side(cur), p, alpha=0.05, min_effect=0.05) == expected


def row(bucket: str, change: float | None, verdict_: str) -> BucketComparison:
    return BucketComparison(bucket, side(1.0), side(1.0), change, change, 0.5, verdict_)


def test_order_worst_regression_first_total_last() -> None:
    rows = [
        row("total_time_s", 0.2, REGRESSED),
        row("think", 0.04, UNCHANGED),
        row("settle", 0.3, REGRESSED),
        row("act", -0.4, IMPROVED),
        row("load", 0.6, REGRESSED),
        row("perceive", 0.08, UNCHANGED),  # a bigger change than settle's 0.3? no: not significant
        row("gpu", None, NOT_COMPARABLE),
        row("overhead", -0.01, UNCHANGED),
    ]
    assert [r.bucket for r in ordered(rows)] == [
        "load",
        "settle",
        "perceive",
        "think",
        "overhead",
        "act",
        "gpu",
        "total_time_s",
    ]


def test_compare_bucket_on_known_samples() -> None:
    base = [float(v) for v in range(1, 41)]
    cur = [v * 1.5 for v in base]
    result = compare_bucket(
        "settle", runs(base[:20], base[20:]), runs(cur), alpha=0.05, min_effect=0.05
    )
    assert result.baseline == Side(40, 20.5, pytest.approx(38.05))
    assert result.current.p50 == pytest.approx(30.75)
    assert result.p50_change == pytest.approx(0.5)
    assert result.p_value == pytest.approx(mann_whitney_u(base, cur).p_value)
    assert result.p_value is not None and result.p_value < 0.01
    assert result.verdict == REGRESSED


def test_empty_sample_on_one_side_is_not_comparable() -> None:
    result = compare_bucket("gpu", runs([1.0, 2.0]), [], alpha=0.05, min_effect=0.05)
    assert result.current == Side(0, None, None)
    assert result.p_value is None and result.p50_change is None
    assert result.verdict == NOT_COMPARABLE
    one_each = compare_bucket("gpu", runs([1.0]), runs([5.0]), alpha=0.05, min_effect=0.05)
    assert one_each.p_value == 1.0 and one_each.verdict == UNCHANGED  # n = 1: no evidence


def test_parallel_comparison_equals_sequential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(comparison, "PARALLEL_FROM", 0)
    rng = random.Random(5)
    before = {b: runs([rng.lognormvariate(0, 0.3) for _ in range(400)]) for b in ("a", "b")}
    after = {b: runs([rng.lognormvariate(0.2, 0.3) for _ in range(300)]) for b in ("a", "c")}
    before["total_time_s"] = after["total_time_s"] = runs([1.0, 2.0, 3.0])
    options = {"alpha": 0.05, "min_effect": 0.05}
    sequential = compare_buckets(before, after, ["a", "b", "c"], **options)
    parallel = compare_buckets(before, after, ["a", "b", "c"], workers=2, **options)
    assert parallel == sequential
    assert [r.bucket for r in sequential] == ["a", "b", "c", "total_time_s"]
    assert sequential[0].verdict == REGRESSED
    assert [r.verdict for r in sequential[1:3]] == [NOT_COMPARABLE] * 2
    assert not math.isnan(sequential[-1].p_value or math.nan)
