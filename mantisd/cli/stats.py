"""`mantis runs stats`: p50/p95/p99 per wall-time bucket across a workflow's last N runs.

Thin over `mantisd.stats`: flags are parsed by click types here, the library is imported when
the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from mantisd.cli.analysis import breakdown_option, by_option, format_option, output_format
from mantisd.cli.common import (
    buckets_option,
    buckets_to_show,
    data_dirs_option,
    db_options,
    json_option,
    note_partial_buckets,
    open_source,
    parquet_option,
    resolve_window,
    runs_location,
    runs_of,
    select_with_progress,
    status_option,
    time_option,
    unknown_workflow,
    warn_skipped,
)
from mantisd.stats.durations import TimeBound, window_phrase


@click.command()
@click.argument("workflow_id")
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Newest-first cap on the runs considered (most recently logged first).",
)
@buckets_option
@time_option("--since", "Window start, inclusive")
@time_option("--until", "Window end, exclusive")
@status_option
@by_option
@click.option(
    "--exemplars", is_flag=True, help="Also name, per bucket, the run nearest its p95 and p99."
)
@breakdown_option
@json_option
@format_option
@data_dirs_option
@parquet_option
@db_options
def stats(
    workflow_id: str,
    last: int,
    buckets: tuple[str, ...],
    since: TimeBound | None,
    until: TimeBound | None,
    status: str,
    by: tuple[str, ...],
    exemplars: bool,
    breakdown: str,
    as_json: bool,
    output: str,
    data_dir: tuple[Path, ...],
    parquet: Path | None,
    db: str | None,
    sources: tuple[str, ...],
) -> None:
    """p50/p95/p99 per wall-time bucket across the last runs of WORKFLOW_ID.

    Buckets are ordered by p50, slowest first; total_time_s comes last. A bucket's
    percentiles are over the runs that report it. The window is
    since <= finished_at < until.
    """
    import datetime as dt

    from mantisd.stats.query import StatsQuery
    from mantisd.stats.render import render_json, render_table
    from mantisd.stats.summary import bucket_stats

    output = output_format(as_json, output)
    low, high = resolve_window(since, until, dt.datetime.now(dt.UTC))
    root = open_source(data_dir, db, sources, parquet)
    query = StatsQuery(
        workflow_id,
        last=last,
        status=status or None,
        since=low,
        until=high,
        by=by,
        breakdown=breakdown,
    )
    if by or exemplars or breakdown != "wall_time" or output == "csv":
        from mantisd.cli.stats_analysis import stats_analysis

        window = window_phrase(since, until)
        stats_analysis(
            root, query, buckets=buckets, exemplars=exemplars, output=output, window=window
        )
        return
    as_json = output == "json"
    selection = select_with_progress(root, query, percentiles=True)

    warn_skipped(selection.report)
    reported = selection.reported()
    shown = buckets_to_show(buckets, reported) if selection.run_count else list(buckets)
    table = bucket_stats(selection.sorted_runs, shown, computed=selection.percentiles)
    if as_json:
        click.echo(render_json(workflow_id, selection.run_count, table), nl=False)
    window = window_phrase(since, until)
    if not selection.run_count:
        raise click.ClickException(
            f"no {runs_of(workflow_id, query.status)}{window} in {runs_location(root)}"
            + unknown_workflow(root, workflow_id)
        )
    note_partial_buckets(selection, [s.bucket for s in table])
    if not as_json:
        phrase = runs_of(workflow_id, query.status, selection.run_count)
        click.echo(f"Across last {selection.run_count} {phrase}{window}:\n")
        click.echo(render_table(table), nl=False)
