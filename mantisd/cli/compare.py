"""`mantis runs compare`: which bucket regressed between a baseline window and the current one.

Thin over `mantisd.stats.comparison`: each window is one `select()` (the same query as
`stats --since --until`), the samples come out of the selection's sorted runs.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

from mantisd.cli.analysis import breakdown_option, by_option, format_option, output_format
from mantisd.cli.common import (
    buckets_option,
    data_dirs_option,
    db_options,
    json_option,
    open_source,
    parquet_option,
    status_option,
    time_option,
    verdict_options,
)
from mantisd.cli.comparing import EXIT_REGRESSED, Judging, run_comparison
from mantisd.stats.durations import TimeBound, check_window, format_instant

#: `--last` when not given: every run of the window.
NO_CAP = sys.maxsize


@click.command()
@click.argument("workflow_id")
@time_option("--since", "Current window start, inclusive", default="30d")
@time_option("--until", "Current window end, exclusive", shown="now")
@time_option(
    "--baseline-since",
    "Baseline window start, inclusive",
    shown="as long before --baseline-until as the current window is long",
)
@time_option(
    "--baseline-until",
    "Baseline window end, exclusive",
    shown="--since: the baseline ends where the current window starts",
)
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=None,
    help="Newest-first cap on the runs of each window (default: every run of the window).",
)
@buckets_option
@status_option
@verdict_options
@click.option(
    "--fail-on-regression",
    is_flag=True,
    help=f"Exit with status {EXIT_REGRESSED} when any bucket regressed (to gate a deploy).",
)
@by_option
@breakdown_option
@json_option
@format_option
@data_dirs_option
@parquet_option
@db_options
def compare(
    workflow_id: str,
    since: TimeBound,
    until: TimeBound | None,
    baseline_since: TimeBound | None,
    baseline_until: TimeBound | None,
    last: int | None,
    buckets: tuple[str, ...],
    status: str,
    alpha: float,
    min_effect: float,
    correction: str,
    fail_on_regression: bool,
    by: tuple[str, ...],
    breakdown: str,
    as_json: bool,
    output: str,
    data_dir: tuple[Path, ...],
    parquet: Path | None,
    db: str | None,
    sources: tuple[str, ...],
) -> None:
    """Per bucket: p50/p95 of a baseline window against the current window, and whether the
    difference is a regression.

    A bucket "regressed" (or "improved") only when the two-sided Mann-Whitney U test gives
    p < alpha (Holm-adjusted across the buckets by default) and its p50 grew (or shrank) by
    more than the minimum effect; otherwise "~". Defaults: the last 30 days against the 30
    days before. Each window is since <= finished_at < until. Regressions come first, worst
    first; total_time_s last.
    """
    from mantisd.stats.query import StatsQuery

    output = output_format(as_json, output)
    now = dt.datetime.now(dt.UTC)
    current = _current_window(since, until, now)
    baseline = _baseline_window(baseline_since, baseline_until, current, now)
    if baseline[1] > current[0] and current[1] > baseline[0]:
        raise click.UsageError(
            f"the windows overlap: baseline {_span(baseline)}, current {_span(current)}; a run "
            "must not be in both samples"
        )
    root = open_source(data_dir, db, sources, parquet)
    # Without --until the current window stays open at the top: rows from pods whose clocks
    # run ahead (the store takes up to a day) are current runs too.
    current_until = current[1] if until else None
    before, after = (
        StatsQuery(
            workflow_id,
            last=last or NO_CAP,
            status=status or None,
            since=low,
            until=high,
            by=by,
            breakdown=breakdown,
        )
        for low, high in ((baseline[0], baseline[1]), (current[0], current_until))
    )
    judging = Judging(buckets, alpha, min_effect, correction, output, fail_on_regression)
    run_comparison(root, (before, after), (baseline, current), judging)


Span = tuple[dt.datetime, dt.datetime]


def _current_window(since: TimeBound, until: TimeBound | None, now: dt.datetime) -> Span:
    low, high = since.resolve(now), until.resolve(now) if until else now
    check_window(low, high)
    return low, high


def _baseline_window(
    since: TimeBound | None, until: TimeBound | None, current: Span, now: dt.datetime
) -> Span:
    """Given edges as typed; by default the span of the current window's length right before it."""
    high = until.resolve(now) if until else current[0]
    if since is not None:
        low = since.resolve(now)
    else:
        try:
            low = high - (current[1] - current[0])
        except OverflowError:
            low = dt.datetime.min.replace(tzinfo=dt.UTC)
    check_window(low, high, since_flag="--baseline-since", until_flag="--baseline-until")
    return low, high


def _span(window: Span) -> str:
    return f"{format_instant(window[0])} to {format_instant(window[1])}"
