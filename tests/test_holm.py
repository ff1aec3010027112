"""Holm-Bonferroni across the buckets of one comparison: adjusted p-values, the family-wise
false-alarm rate on flat data, and the `--correction` flag."""

from __future__ import annotations

import math
import random
from array import array
from pathlib import Path

import pytest

from mantisd.schema import BUCKETS, TOTAL
from mantisd.stats.comparison import REGRESSED, UNCHANGED, compare_buckets
from mantisd.stats.mannwhitney import mann_whitney_u
from mantisd.stats.multiple import correct, holm
from tests.analysis_data import START as OCTOBER
from tests.analysis_data import document, invoke, run, write

ALPHA = 0.05
SEEDS = 200
RUNS = 25  # per window: small samples, as a fresh workflow has


def test_holm_adjusted_p_values_by_hand() -> None:
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1, raised to 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == []


def test_holm_decision_is_the_step_down_rule() -> None:
    rng = random.Random(1)
    for _ in range(200):
        ps = [rng.random() ** 3 for _ in range(rng.randint(1, 12))]
        adjusted = holm(ps)
        # step down: reject the i-th smallest while p_(i) < alpha / (m - i); stop at the first
        # that is not
        order = sorted(range(len(ps)), key=ps.__getitem__)
        rejected = set()
        for rank, index in enumerate(order):
            if ps[index] >= ALPHA / (len(ps) - rank):
                break
            rejected.add(index)
        assert {i for i, p in enumerate(adjusted) if p < ALPHA} == rejected


def flat_samples(rng: random.Random) -> tuple[dict[str, list[array[float]]], ...]:
    """Two windows drawn from the same distributions: buckets lognormal, total their sum."""
    windows = []
    for _ in range(2):
        runs = [{b: rng.lognormvariate(math.log(10), 0.4) for b in BUCKETS} for _ in range(RUNS)]
        for r in runs:
            r[TOTAL] = sum(r.values()) + rng.uniform(0, 2)
        windows.append({name: [array("d", sorted(r[name] for r in runs))] for name in runs[0]})
    return windows[0], windows[1]


def binomial_upper(n: int, p: float, tail: float) -> int:
    """The smallest k with P(X > k) < tail for X ~ Binomial(n, p): a bound a correct rate
    stays under except with probability `tail`."""
    cumulative = 0.0
    for k in range(n + 1):
        cumulative += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if 1 - cumulative < tail:
            return k
    return n


def test_family_wise_false_alarm_rate_on_flat_data_stays_under_alpha() -> None:
    """200 flat comparisons of ten buckets each (deterministic seeds): with Holm, the number of
    comparisons with any verdict but `~` is what a rate of at most alpha allows (a binomial
    bound exceeded with probability 1e-6); uncorrected, far more comparisons alarm."""
    alarms = {"holm": 0, "none": 0}
    for seed in range(SEEDS):
        baseline, current = flat_samples(random.Random(seed))
        rows = compare_buckets(baseline, current, BUCKETS, alpha=ALPHA, min_effect=0.0)
        assert len(rows) == len(BUCKETS) + 1
        for method in alarms:
            (corrected,) = correct([rows], method=method, alpha=ALPHA, min_effect=0.0)
            alarms[method] += any(row.verdict != UNCHANGED for row in corrected)
    bound = binomial_upper(SEEDS, ALPHA, 1e-6)
    assert alarms["holm"] <= bound
    assert alarms["none"] > 2 * bound  # the test can tell a correction from none


def test_correction_changes_a_marginal_verdict() -> None:
    baseline = [10.0 + i * 0.1 for i in range(40)]
    shift = next(
        s / 100
        for s in range(1, 400)
        if 0.005 < (mann_whitney_u(baseline, [v + s / 100 for v in baseline]).p_value or 1) < 0.04
    )
    current = [v + shift for v in baseline]
    flat = [array("d", baseline)]
    before = {b: flat for b in BUCKETS} | {TOTAL: flat}
    after = {b: flat for b in BUCKETS} | {"settle": [array("d", current)], TOTAL: flat}
    rows = compare_buckets(before, after, BUCKETS, alpha=ALPHA, min_effect=0.0)
    (raw,) = correct([rows], method="none", alpha=ALPHA, min_effect=0.0)
    (adjusted,) = correct([rows], method="holm", alpha=ALPHA, min_effect=0.0)
    settle_raw = next(r for r in raw if r.bucket == "settle")
    settle = next(r for r in adjusted if r.bucket == "settle")
    assert settle_raw.verdict == REGRESSED and settle_raw.p_adjusted is None
    assert settle.verdict == UNCHANGED
    assert settle.p_value is not None and settle.p_adjusted == pytest.approx(10 * settle.p_value)


def test_the_family_spans_every_group() -> None:
    """Three groups of ten tests: the smallest p is multiplied by 30, not 10."""
    baseline = [float(i) for i in range(30)]
    moved = [v + 12 for v in baseline]
    flat = {b: [array("d", baseline)] for b in [*BUCKETS, TOTAL]}
    slow = flat | {"settle": [array("d", moved)]}
    groups = [
        compare_buckets(flat, after, BUCKETS, alpha=ALPHA, min_effect=0.0)
        for after in (slow, flat, flat)
    ]
    corrected = correct(groups, method="holm", alpha=ALPHA, min_effect=0.0)
    settle = next(r for r in corrected[0] if r.bucket == "settle")
    assert settle.p_value is not None and settle.p_adjusted == pytest.approx(30 * settle.p_value)


def test_unknown_correction_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown correction 'bh'"):
        correct([], method="bh", alpha=ALPHA, min_effect=0.0)


# ---------------------------------------------------------------- the flag


@pytest.fixture
def two_windows(data_dir: Path) -> Path:
    september = OCTOBER.replace(month=9)
    lines = [run(k, month_start=september) for k in range(1, 9)]
    lines += [run(k + 100, month_start=OCTOBER, run_id=f"cur-{k}") for k in range(1, 9)]
    write(data_dir, lines[:8], "2026-09")
    write(data_dir, lines[8:], "2026-10")
    return data_dir


WINDOWS = ["--since", "2026-10-01", "--until", "2026-10-02", "--baseline-since", "2026-09-01"]


def test_the_header_and_json_say_which_correction(two_windows: Path) -> None:
    holm_doc = document(invoke("compare", two_windows, *WINDOWS, "--json"))
    assert holm_doc["correction"] == "holm"
    assert all(b["p_adjusted"] is not None for b in holm_doc["buckets"])
    none_doc = document(invoke("compare", two_windows, *WINDOWS, "--json", "--correction", "none"))
    assert none_doc["correction"] == "none"
    assert all(b["p_adjusted"] is None for b in none_doc["buckets"])
    assert [b["p_value"] for b in none_doc["buckets"]] == [
        b["p_value"] for b in holm_doc["buckets"]
    ]
    table = invoke("compare", two_windows, *WINDOWS).stdout.splitlines()
    assert "(Mann-Whitney U, Holm-adjusted)" in table[3]
    plain = invoke("compare", two_windows, *WINDOWS, "--correction", "none").stdout.splitlines()
    assert "(Mann-Whitney U, uncorrected)" in plain[3]
    bad = invoke("compare", two_windows, *WINDOWS, "--correction", "bonferroni")
    assert bad.exit_code == 2 and "'bonferroni' is not one of 'holm', 'none'" in bad.stderr
