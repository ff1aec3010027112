"""`mantis runs trend`: one line per day, week or month of a bucket's p50/p95/p99, with a bar.

Thin over `mantisd.stats.trend`: one pass over the window's shards (`select_periods`) splits
the runs by period.
"""

from __future__ import annotations

from pathlib import Path

import click

from mantisd.cli.analysis import breakdown_option, format_option, output_format
from mantisd.cli.common import (
    buckets_to_show,
    check_period_count,
    data_dirs_option,
    db_options,
    json_option,
    open_source,
    parquet_option,
    progress,
    readable,
    runs_location,
    runs_of,
    status_option,
    time_option,
    warn_skipped,
)
from mantisd.stats.durations import TimeBound
from mantisd.text import printable

#: More periods than this is a usage error (`--since 99999d --every 1d` would be 100k lines).


def one_bucket(buckets: tuple[str, ...]) -> str:
    """The one `--bucket` given (default total_time_s); several are a usage error, never the
    last one silently."""
    if len(buckets) > 1:
        raise click.BadParameter(
            f"trend follows one bucket, got {len(buckets)} ({printable(', '.join(buckets))}): "
            "run it once per bucket (mantis runs stats and compare take several)",
            param_hint="'--bucket'",
        )
    return buckets[0] if buckets else "total_time_s"


def cost_component(buckets: tuple[str, ...], reported: set[str]) -> str:
    """`--breakdown cost` follows the component `--bucket` names (there is no total to default
    to), checked against the components the selected runs report."""
    from mantisd.cli.analysis import components_to_show

    if not buckets:
        raise click.BadParameter(
            "with --breakdown cost, name the cost_breakdown entry to follow (reported: "
            f"{printable(', '.join(sorted(reported))) or 'none'})",
            param_hint="'--bucket'",
        )
    return components_to_show(buckets[:1], reported)[0]


@click.command()
@click.argument("workflow_id")
@click.option(
    "--bucket",
    "buckets",
    multiple=True,
    show_default="total_time_s",
    metavar="NAME",
    help="The wall-time bucket to follow (or total_time_s); one per command.",
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
@breakdown_option
@json_option
@format_option
@data_dirs_option
@parquet_option
@db_options
def trend(
    workflow_id: str,
    buckets: tuple[str, ...],
    every: str,
    since: TimeBound | None,
    until: TimeBound | None,
    status: str,
    breakdown: str,
    as_json: bool,
    output: str,
    data_dir: tuple[Path, ...],
    parquet: Path | None,
    db: str | None,
    sources: tuple[str, ...],
) -> None:
    """p50/p95/p99 of one bucket of WORKFLOW_ID, one line per period, oldest first.

    The bar is the period's p50, scaled to the largest p50 shown: a drift shows at a glance.
    Periods without runs show n 0; a period the window covers only in part is marked *.
    The window is since <= finished_at < until.
    """
    import dataclasses
    import datetime as dt
    import functools

    from mantisd.schema import MAX_FUTURE
    from mantisd.stats import trend as periods
    from mantisd.stats.durations import check_window, format_instant, rfc3339
    from mantisd.stats.query import StatsQuery
    from mantisd.stats.render_trend import render_trend, render_trend_json
    from mantisd.stats.source import as_source

    bucket = one_bucket(buckets)
    output = output_format(as_json, output)
    as_json = output == "json"
    now = dt.datetime.now(dt.UTC)
    high = until.resolve(now) if until else now
    low = since.resolve(now) if since else periods.default_since(high, every)
    check_window(low, high)
    bounds = periods.edges(low, high, every)
    check_period_count(bounds, every, low, high)
    root = open_source(data_dir, db, sources, parquet)
    query = StatsQuery(
        workflow_id, status=status or None, since=low, until=high, breakdown=breakdown
    )
    scan_bounds = bounds
    if until is None:  # open at the top: rows from pods whose clocks run ahead count (last period)
        scan_bounds = [*bounds[:-1], max(bounds[-1], now + MAX_FUTURE)]
        query = dataclasses.replace(query, until=None)
    on_shard, done = progress()
    try:
        with readable():
            selections, report = as_source(root).select_periods(
                query, scan_bounds, on_shard=on_shard
            )
    finally:
        done()
    warn_skipped(report)
    run_count = sum(s.run_count for s in selections)
    if run_count:
        reported = set().union(*(s.reported() for s in selections))
        if breakdown == "cost":
            bucket = cost_component(buckets, reported)
        else:
            buckets_to_show([bucket], reported)  # an unknown bucket is a usage error
    points = periods.points([s.sorted_runs.get(bucket, []) for s in selections], bounds, low, high)
    if as_json:
        click.echo(
            render_trend_json(
                workflow_id,
                status or None,
                bucket,
                every,
                rfc3339(low),
                rfc3339(high),
                points,
                breakdown=breakdown,
            ),
            nl=False,
        )
    elif output == "csv":
        from mantisd.stats.render_csv import trend_csv

        click.echo(trend_csv(workflow_id, bucket, points, breakdown=breakdown), nl=False)
    window = f"from {format_instant(low)} to {format_instant(high)}"
    if not run_count:
        raise click.ClickException(
            f"no {runs_of(workflow_id, status or None)} {window} in {runs_location(root)}"
        )
    reporting = sum(p.n for p in points)
    if reporting < run_count:
        click.echo(
            f"note: {printable(bucket)} reported by {reporting} of {run_count} runs", err=True
        )
    if breakdown == "cost":
        from mantisd.cli.analysis import note_ignored

        note_ignored(sum(s.ignored for s in selections))
    if output == "table":
        noun = {"1d": "daily", "1w": "weekly", "1mo": "monthly"}[every]
        click.echo(
            f"{printable(bucket)} of {runs_of(workflow_id, status or None, run_count)}, {noun}, "
            f"{window}:\n"
        )
        format_value = None
        if breakdown == "cost":
            from mantisd.stats.costs import format_cost

            format_value = functools.partial(format_cost, bucket)
        click.echo(render_trend(points, every, format_value), nl=False)
