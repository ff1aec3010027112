"""`mantis runs stats`: p50/p95/p99 per wall-time bucket across a workflow's last N runs.

Thin over `mantisd.stats`: flags are parsed by click types here, the library is imported when
the command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mantisd.stats.durations import Duration, Window

if TYPE_CHECKING:
    from mantisd.stats.query import Selection, StatsQuery

STATUSES = ("succeeded", "failed", "")
#: Progress goes to a terminal only, and only when there is more than this many shards to read.
PROGRESS_MIN_SHARDS = 2


@click.command()
@click.argument("workflow_id")
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Newest-first cap on the runs considered (most recently logged first).",
)
@click.option(
    "--bucket",
    "buckets",
    multiple=True,
    metavar="NAME",
    help="Restrict to these wall-time buckets (repeatable); total_time_s is always shown.",
)
@click.option(
    "--since",
    type=Duration(),
    default=None,
    help="Only runs that finished within this window: 7d, 24h, 30m.",
)
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    default="succeeded",
    show_default=True,
    help="Terminal status to keep; '' keeps every status.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of the table.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data directory (default: $MANTIS_DATA_DIR, else the platform's default).",
)
def stats(
    workflow_id: str,
    last: int,
    buckets: tuple[str, ...],
    since: Window | None,
    status: str,
    as_json: bool,
    data_dir: Path | None,
) -> None:
    """p50/p95/p99 per wall-time bucket across the last runs of WORKFLOW_ID.

    Buckets are ordered by p50, slowest first; total_time_s comes last. A bucket's
    percentiles are over the runs that report it.
    """
    import datetime as dt

    from mantisd.paths import resolve_data_dir, runs_log_dir
    from mantisd.schema import BUCKETS
    from mantisd.stats.fanout import default_workers
    from mantisd.stats.query import StatsQuery
    from mantisd.stats.render import render_json, render_table
    from mantisd.stats.summary import bucket_stats

    root = resolve_data_dir(data_dir)
    if not root.is_dir():
        raise click.ClickException(f"data dir {root} does not exist (see --data-dir)")
    if not runs_log_dir(root).is_dir():
        raise click.ClickException(f"no run log in {root} ({runs_log_dir(root)} does not exist)")
    now = dt.datetime.now(dt.UTC)
    query = StatsQuery(
        workflow_id,
        last=last,
        status=status or None,
        since=since.cutoff(now) if since else None,
    )
    selection = _select_with_progress(root, query)

    summary = selection.report.summary()
    if summary:
        click.echo(f"warning: {summary}", err=True)
    seen = selection.seconds.keys()
    unknown = [b for b in buckets if b not in BUCKETS and b not in seen and b != "total_time_s"]
    if unknown and selection.run_count:
        raise click.BadParameter(
            f"{', '.join(map(repr, unknown))}: neither one of the nine buckets nor reported "
            f"by any selected run (known: {', '.join(sorted(set(BUCKETS) | set(seen)))})",
            ctx=click.get_current_context(),
            param_hint="'--bucket'",
        )
    shown = buckets or [b for b in BUCKETS if b in seen] + sorted(set(seen) - set(BUCKETS))
    table = bucket_stats(selection.seconds, shown, workers=default_workers())
    if as_json:
        click.echo(render_json(workflow_id, selection.run_count, table), nl=False)
    if not selection.run_count:
        raise click.ClickException(f"no {_runs_of(query, since)} in {runs_log_dir(root)}")
    _note_partial_buckets(selection, [s.bucket for s in table])
    if not as_json:
        phrase = _runs_of(query, since, selection.run_count)
        click.echo(f"Across last {selection.run_count} {phrase}:\n")
        click.echo(render_table(table), nl=False)


def _runs_of(query: StatsQuery, since: Window | None, count: int = 2) -> str:
    """`succeeded runs of X` / `runs of X in the last 7d`: the header's and errors' phrase."""
    noun = "run" if count == 1 else "runs"
    status = f"{query.status} " if query.status else ""
    window = f" in the last {since.text}" if since else ""
    return f"{status}{noun} of {query.workflow_id}{window}"


def _select_with_progress(root: Path, query: StatsQuery) -> Selection:
    """`select`, with a `\\r` progress line per shard when stderr is a terminal."""
    from mantisd.stats.query import select

    if not sys.stderr.isatty():
        return select(root, query)
    shown = False

    def on_shard(index: int, count: int, month: str) -> None:
        nonlocal shown
        if count > PROGRESS_MIN_SHARDS:
            click.echo(f"\rreading {month} ({index + 1}/{count} shards)...", err=True, nl=False)
            shown = True

    try:
        return select(root, query, on_shard=on_shard)
    finally:
        if shown:
            click.echo("\r\033[K", err=True, nl=False)


def _note_partial_buckets(selection: Selection, buckets: list[str]) -> None:
    """Say on stderr which buckets fewer runs reported (their percentiles cover those only)."""
    partial = [
        f"{b} ({len(selection.seconds[b])} of {selection.run_count})"
        for b in buckets
        if b in selection.seconds and len(selection.seconds[b]) < selection.run_count
    ]
    if partial:
        click.echo(f"note: reported by fewer runs: {', '.join(partial)}", err=True)
