"""`mantis runs stats`: p50/p95/p99 per wall-time bucket across a workflow's last N runs.

Thin over `mantisd.stats`: flags are parsed by click types here, the library is imported when
the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from mantisd.cli.common import (
    buckets_option,
    buckets_to_show,
    data_dir_option,
    json_option,
    log_root,
    note_partial_buckets,
    resolve_window,
    runs_of,
    select_with_progress,
    status_option,
    time_option,
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
@json_option
@data_dir_option
def stats(
    workflow_id: str,
    last: int,
    buckets: tuple[str, ...],
    since: TimeBound | None,
    until: TimeBound | None,
    status: str,
    as_json: bool,
    data_dir: Path | None,
) -> None:
    """p50/p95/p99 per wall-time bucket across the last runs of WORKFLOW_ID.

    Buckets are ordered by p50, slowest first; total_time_s comes last. A bucket's
    percentiles are over the runs that report it. The window is
    since <= finished_at < until.
    """
    import datetime as dt

    from mantisd.paths import runs_log_dir
    from mantisd.stats.query import StatsQuery
    from mantisd.stats.render import render_json, render_table
    from mantisd.stats.summary import bucket_stats

    low, high = resolve_window(since, until, dt.datetime.now(dt.UTC))
    root = log_root(data_dir)
    query = StatsQuery(workflow_id, last=last, status=status or None, since=low, until=high)
    selection = select_with_progress(root, query)

    warn_skipped(selection.report)
    reported = selection.sorted_runs.keys()
    shown = buckets_to_show(buckets, reported) if selection.run_count else list(buckets)
    table = bucket_stats(selection.sorted_runs, shown)
    if as_json:
        click.echo(render_json(workflow_id, selection.run_count, table), nl=False)
    window = window_phrase(since, until)
    if not selection.run_count:
        raise click.ClickException(
            f"no {runs_of(workflow_id, query.status)}{window} in {runs_log_dir(root)}"
        )
    note_partial_buckets(selection, [s.bucket for s in table])
    if not as_json:
        phrase = runs_of(workflow_id, query.status, selection.run_count)
        click.echo(f"Across last {selection.run_count} {phrase}{window}:\n")
        click.echo(render_table(table), nl=False)
