"""Old lines with absurd durations (written before validation bounded them, or by hand) are
skipped and counted by every reader: no `inf`, no 309-digit number reaches a table or JSON."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from mantisd.cli import mantis
from tests.stats_data import golden_run, write_shard

WORKFLOW = "default__golden-v1"
HUGE = b"1.7e308"


def huge_line(k: int, *, bucket: str | None) -> bytes:
    """A golden run whose `total_time_s` (or one bucket) is near the largest double."""
    line = golden_run(k)
    if bucket is None:
        return re.sub(rb'"total_time_s":[0-9.]+', b'"total_time_s":' + HUGE, line)
    return re.sub(
        rb'"' + bucket.encode() + rb'":[0-9.]+', b'"' + bucket.encode() + b'":' + HUGE, line
    )


@pytest.fixture
def huge_dir(data_dir: Path) -> Path:
    lines = [golden_run(k) for k in range(1, 6)]
    lines += [huge_line(6, bucket=None), huge_line(7, bucket="think"), huge_line(8, bucket="act")]
    write_shard(data_dir, "2026-05", lines)
    return data_dir


def run(data_dir: Path, *args: str) -> tuple[str, str]:
    result = CliRunner().invoke(
        mantis, ["runs", *args, "--data-dir", str(data_dir)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output + result.stderr
    return result.stdout, result.stderr


def assert_finite_and_short(text: str) -> None:
    assert not re.search(r"\binf|nan\b|Infinity|NaN", text), text
    assert not re.search(r"[0-9]{13,}", text), text


@pytest.mark.parametrize("as_json", [False, True])
def test_stats_skips_and_counts_lines_with_absurd_durations(huge_dir: Path, as_json: bool) -> None:
    out, err = run(huge_dir, "stats", WORKFLOW, *(["--json"] if as_json else []))
    assert_finite_and_short(out)
    assert "skipped 3 unreadable line(s)" in err
    assert "Across last 5 succeeded runs" in out or '"run_count":5' in out


@pytest.mark.parametrize("as_json", [False, True])
def test_compare_and_trend_stay_finite(huge_dir: Path, as_json: bool) -> None:
    flag = ["--json"] if as_json else []
    window = ["--since", "2026-05-13T18:03:00Z", "--until", "2026-05-14"]
    baseline = ["--baseline-since", "2026-05-13", "--baseline-until", "2026-05-13T18:03:00Z"]
    out, err = run(huge_dir, "compare", WORKFLOW, *window, *baseline, *flag)
    assert_finite_and_short(out)
    assert "skipped 3 unreadable line(s)" in err
    out, err = run(
        huge_dir, "trend", WORKFLOW, "--since", "2026-05-01", "--until", "2026-06-01", *flag
    )
    assert_finite_and_short(out)
    assert "skipped 3 unreadable line(s)" in err


def test_the_golden_runs_are_unchanged_by_the_huge_neighbours(huge_dir: Path) -> None:
    out, _ = run(huge_dir, "stats", WORKFLOW, "--json")
    assert '"total_time_s":{"p50":240.0' in out
