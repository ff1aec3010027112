"""`mantis runs compare`: which bucket regressed between a baseline window and the current one.

Thin over `mantisd.stats.comparison`: each window is one `select()` (the same query as
`stats --since --until`), the samples come out of the selection's sorted runs.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

from mantisd.cli.common import (
    buckets_option,
    buckets_to_show,
    data_dir_option,
    json_option,
    log_root,
    note_partial_buckets,
    runs_of,
    select_many_with_progress,
    status_option,
    time_option,
    warn_skipped,
)
from mantisd.stats.durations import TimeBound, check_window, format_instant
from mantisd.stats.effect import RelativeEffect

#: Exit status when `--fail-on-regression` is given and a bucket regressed.
EXIT_REGRESSED = 3
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
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="Significance level of the two-sided Mann-Whitney U test.",
)
@click.option(
    "--min-effect",
    type=RelativeEffect(),
    default="5%",
    show_default=True,
    help="Smallest p50 change called a regression or improvement (5% or 0.05).",
)
@click.option(
    "--fail-on-regression",
    is_flag=True,
    help=f"Exit with status {EXIT_REGRESSED} when any bucket regressed (to gate a deploy).",
)
@json_option
@data_dir_option
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
    fail_on_regression: bool,
    as_json: bool,
    data_dir: Path | None,
) -> None:
    """Per bucket: p50/p95 of a baseline window against the current window, and whether the
    difference is a regression.

    A bucket "regressed" (or "improved") only when the two-sided Mann-Whitney U test gives
    p < alpha and its p50 grew (or shrank) by more than the minimum effect; otherwise "~".
    Defaults: the last 30 days against the 30 days before. Each window is
    since <= finished_at < until. Regressions come first, worst first; total_time_s last.
    """
    from mantisd.stats.comparison import REGRESSED, compare_buckets
    from mantisd.stats.fanout import default_workers
    from mantisd.stats.query import StatsQuery
    from mantisd.stats.render_compare import (
        Window,
        change,
        render_comparison,
        render_comparison_json,
        render_header,
    )

    now = dt.datetime.now(dt.UTC)
    current = _current_window(since, until, now)
    baseline = _baseline_window(baseline_since, baseline_until, current, now)
    if baseline[1] > current[0] and current[1] > baseline[0]:
        raise click.UsageError(
            f"the windows overlap: baseline {_span(baseline)}, current {_span(current)}; a run "
            "must not be in both samples"
        )
    root = log_root(data_dir)
    # Without --until the current window stays open at the top: rows from pods whose clocks
    # run ahead (the store takes up to a day) are current runs too.
    current_until = current[1] if until else None
    queries = [
        StatsQuery(workflow_id, last=last or NO_CAP, status=status or None, since=low, until=high)
        for low, high in ((baseline[0], baseline[1]), (current[0], current_until))
    ]
    before, after = select_many_with_progress(root, *queries)
    for selection in (before, after):
        warn_skipped(selection.report)

    base_window = Window(*baseline, before.run_count)
    cur_window = Window(*current, after.run_count)
    empty = [name for name, s in (("baseline", before), ("current", after)) if not s.run_count]
    rows = []
    if not empty:
        shown = buckets_to_show(buckets, before.sorted_runs.keys() | after.sorted_runs.keys())
        rows = compare_buckets(
            before.sorted_runs,
            after.sorted_runs,
            shown,
            alpha=alpha,
            min_effect=min_effect,
            workers=default_workers(),
        )
    if as_json:
        document = render_comparison_json(
            workflow_id,
            status or None,
            base_window,
            cur_window,
            alpha=alpha,
            min_effect=min_effect,
            rows=rows,
        )
        click.echo(document, nl=False)
    runs = runs_of(workflow_id, status or None)
    if empty:
        where = " and ".join(
            f"the {name} window ({_span(window)})"
            for name, window in (("baseline", baseline), ("current", current))
            if name in empty
        )
        raise click.ClickException(f"no {runs} in {where}: nothing to compare")
    shown_buckets = [row.bucket for row in rows]
    note_partial_buckets(before, shown_buckets, where=" in the baseline")
    note_partial_buckets(after, shown_buckets, where=" in the current window")
    if not as_json:
        title = runs[0].upper() + runs[1:]
        click.echo(render_header(title, base_window, cur_window, alpha, min_effect))
        click.echo(render_comparison(rows), nl=False)
    regressed = [row for row in rows if row.verdict == REGRESSED]
    if fail_on_regression and regressed:
        names = ", ".join(f"{row.bucket} ({change(row.p50_change)})" for row in regressed)
        click.echo(f"regressed: {names}", err=True)
        click.get_current_context().exit(EXIT_REGRESSED)


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
