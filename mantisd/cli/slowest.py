"""`mantis runs slowest`: the runs behind a percentile, with the ids a post-mortem needs.

Selects exactly the runs `stats` aggregates with the same flags (`--last 100` succeeded runs
by default), ranks them by one bucket, and prints the top ones with their `run_id`,
`finished_at`, value, other largest buckets, model, plan and error.
"""

from __future__ import annotations

from pathlib import Path

import click

from mantisd.cli.analysis import breakdown_option, runs_with_progress
from mantisd.cli.common import (
    data_dir_option,
    db_options,
    json_option,
    open_source,
    parquet_option,
    resolve_window,
    runs_location,
    runs_of,
    status_option,
    time_option,
    unknown_workflow,
    warn_skipped,
)
from mantisd.stats.durations import TimeBound, window_phrase
from mantisd.text import printable


@click.command()
@click.argument("workflow_id")
@click.option(
    "--bucket",
    default=None,
    metavar="NAME",
    help="Rank by this wall-time bucket (default: total_time_s), or by this cost_breakdown "
    "entry with --breakdown cost.",
)
@click.option(
    "-n",
    "--count",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="How many runs to show.",
)
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Newest-first cap on the runs ranked (the runs `stats` aggregates with this flag).",
)
@time_option("--since", "Window start, inclusive")
@time_option("--until", "Window end, exclusive")
@status_option
@breakdown_option
@json_option
@data_dir_option
@db_options
@parquet_option
def slowest(
    workflow_id: str,
    bucket: str | None,
    count: int,
    last: int,
    since: TimeBound | None,
    until: TimeBound | None,
    status: str,
    breakdown: str,
    as_json: bool,
    data_dir: Path | None,
    db: str | None,
    sources: tuple[str, ...],
    parquet: Path | None,
) -> None:
    """The runs of WORKFLOW_ID with the largest values of one bucket, largest first.

    Each run comes with its run_id and finished_at (for the one-run post-mortem: the run's
    summary.wall_time_breakdown), its other largest buckets, model, plan and error. The
    runs ranked are the ones `mantis runs stats` aggregates with the same flags.
    """
    import datetime as dt

    from mantisd.reader import ScanReport
    from mantisd.schema import BUCKETS, TOTAL
    from mantisd.stats.costs import COST, formatter
    from mantisd.stats.percentiles import percentiles
    from mantisd.stats.query import StatsQuery
    from mantisd.stats.render_slowest import render_slowest, render_slowest_json
    from mantisd.stats.slowest import slowest as rank

    low, high = resolve_window(since, until, dt.datetime.now(dt.UTC))
    root = open_source(data_dir, db, sources, parquet)
    query = StatsQuery(
        workflow_id, last=last, status=status or None, since=low, until=high, breakdown=breakdown
    )
    report = ScanReport()
    runs = runs_with_progress(root, query, report)
    warn_skipped(report)
    reported = set().union(*(run.values.keys() for run in runs))
    if breakdown == COST:
        if bucket is None and runs:
            raise click.BadParameter(
                "with --breakdown cost, name the cost_breakdown entry to rank by (reported: "
                f"{printable(', '.join(sorted(reported))) or 'none'})",
                param_hint="'--bucket'",
            )
        known = reported
    else:
        bucket = bucket or TOTAL
        known = reported | set(BUCKETS) | {TOTAL}
    if runs and bucket not in known:
        raise click.BadParameter(
            f"{bucket!r}: no selected run reports it "
            f"(reported: {printable(', '.join(sorted(reported)))})",
            param_hint="'--bucket'",
        )
    top = rank(runs, bucket, count) if bucket else []
    if as_json:
        click.echo(
            render_slowest_json(
                workflow_id, query.status, bucket or "", len(runs), top, breakdown=breakdown
            ),
            nl=False,
        )
    window = window_phrase(since, until)
    if not runs:
        raise click.ClickException(
            f"no {runs_of(workflow_id, query.status)}{window} in {runs_location(root)}"
            + unknown_workflow(root, workflow_id)
        )
    assert bucket is not None
    if not top:
        raise click.ClickException(f"no selected run reports {printable(bucket)}")
    if as_json:
        return
    values = [run.values[bucket] for run in runs if bucket in run.values]
    p50, p99 = percentiles(values, (50, 99))
    fmt = formatter(breakdown)
    click.echo(
        f"{'Top' if breakdown == COST else 'Slowest'} {len(top)} of last {len(runs)} "
        f"{runs_of(workflow_id, query.status)}{window},\n"
        f"by {printable(bucket)} (p50 {fmt(bucket, p50)}, p99 {fmt(bucket, p99)} across them):\n"
    )
    click.echo(render_slowest(top, bucket, fmt, rank_others=breakdown != COST), nl=False)
