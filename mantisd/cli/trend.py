"""`mantis runs trend`: one line per day, week or month of a bucket's p50/p95/p99, with a bar.

Thin over `mantisd.stats.trend`: one pass over the window's shards (`select_periods`) splits
the runs by period.
"""

from __future__ import annotations

from pathlib import Path

import click

from mantisd.cli.common import (
    buckets_to_show,
    data_dir_option,
    json_option,
    log_root,
    progress,
    runs_of,
    status_option,
    time_option,
    warn_skipped,
)
from mantisd.stats.durations import TimeBound

#: More periods than this is a usage error (`--since 99999d --every 1d` would be 100k lines).
MAX_PERIODS = 1000


@click.command()
@click.argument("workflow_id")
@click.option(
    "--bucket",
    default="total_time_s",
    show_default=True,
    metavar="NAME",
    help="The wall-time bucket to follow (or total_time_s).",
)
@click.option(
    "--every",
    type=click.Choice(["1d", "1w", "1mo"]),
    default="1w",
    show_default=True,
    help="Period: UTC days, ISO weeks (Monday to Sunday) or calendar months.",
)
@time_option(
    "--since",
    "Window start, inclusive",
    shown="the start of the period 11 periods before the current one (12 periods)",
)
@time_option("--until", "Window end, exclusive", shown="now")
@status_option
@json_option
@data_dir_option
def trend(
    workflow_id: str,
    bucket: str,
    every: str,
    since: TimeBound | None,
    until: TimeBound | None,
    status: str,
    as_json: bool,
    data_dir: Path | None,
) -> None:
    """p50/p95/p99 of one bucket of WORKFLOW_ID, one line per period, oldest first.

    The bar is the period's p50, scaled to the largest p50 shown: a drift shows at a glance.
    Periods without runs show n 0; a period the window covers only in part is marked *.
    The window is since <= finished_at < until.
    """
    import dataclasses
    import datetime as dt

    from mantisd.paths import runs_log_dir
    from mantisd.schema import MAX_FUTURE
    from mantisd.stats import trend as periods
    from mantisd.stats.durations import check_window, format_instant, rfc3339
    from mantisd.stats.query import StatsQuery, select_periods
    from mantisd.stats.render_trend import render_trend, render_trend_json

    now = dt.datetime.now(dt.UTC)
    high = until.resolve(now) if until else now
    low = since.resolve(now) if since else periods.default_since(high, every)
    check_window(low, high)
    bounds = periods.edges(low, high, every)
    if len(bounds) - 1 > MAX_PERIODS:
        raise click.UsageError(
            f"{len(bounds) - 1} periods of {every} from {format_instant(low)} to "
            f"{format_instant(high)}: at most {MAX_PERIODS} (narrow the window or use a longer "
            "--every)"
        )
    root = log_root(data_dir)
    query = StatsQuery(workflow_id, status=status or None, since=low, until=high)
    scan_bounds = bounds
    if until is None:  # open at the top: rows from pods whose clocks run ahead count (last period)
        scan_bounds = [*bounds[:-1], max(bounds[-1], now + MAX_FUTURE)]
        query = dataclasses.replace(query, until=None)
    on_shard, done = progress()
    try:
        selections, report = select_periods(root, query, scan_bounds, on_shard=on_shard)
    except OSError as exc:
        raise click.ClickException(f"cannot read the run log: {exc}") from None
    finally:
        done()
    warn_skipped(report)
    run_count = sum(s.run_count for s in selections)
    if run_count:
        reported = set().union(*(s.sorted_runs.keys() for s in selections))
        buckets_to_show([bucket], reported)  # an unknown bucket is a usage error
    points = periods.points([s.sorted_runs.get(bucket, []) for s in selections], bounds, low, high)
    if as_json:
        click.echo(
            render_trend_json(
                workflow_id, status or None, bucket, every, rfc3339(low), rfc3339(high), points
            ),
            nl=False,
        )
    window = f"from {format_instant(low)} to {format_instant(high)}"
    if not run_count:
        raise click.ClickException(
            f"no {runs_of(workflow_id, status or None)} {window} in {runs_log_dir(root)}"
        )
    reporting = sum(p.n for p in points)
    if reporting < run_count:
        click.echo(f"note: {bucket} reported by {reporting} of {run_count} runs", err=True)
    if not as_json:
        noun = {"1d": "daily", "1w": "weekly", "1mo": "monthly"}[every]
        click.echo(
            f"{bucket} of {runs_of(workflow_id, status or None, run_count)}, {noun}, {window}:\n"
        )
        click.echo(render_trend(points, every), nl=False)
