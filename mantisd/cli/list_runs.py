"""`mantis runs list`: which workflows the log holds, so that `stats` gets a real id.

Thin over `mantisd.stats.workflows`: one newest-first pass over the shards (of the window),
rows checked and deduplicated as `stats` does.
"""

from __future__ import annotations

from pathlib import Path

import click

from mantisd.cli.common import (
    data_dirs_option,
    db_options,
    json_option,
    open_source,
    parquet_option,
    progress,
    readable,
    runs_location,
    time_option,
    warn_skipped,
)
from mantisd.stats.durations import TimeBound


@click.command("list")
@time_option("--since", "Count only runs finished at or after")
@json_option
@data_dirs_option
@parquet_option
@db_options
def list_runs(
    since: TimeBound | None,
    as_json: bool,
    data_dir: tuple[Path, ...],
    parquet: Path | None,
    db: str | None,
    sources: tuple[str, ...],
) -> None:
    """Every workflow in the log with its run count, failed count and newest finished_at,
    busiest first."""
    import datetime as dt

    from mantisd.reader import ScanReport
    from mantisd.stats.durations import window_phrase
    from mantisd.stats.render_workflows import render_workflows_json, render_workflows_table
    from mantisd.stats.source import as_source

    low = since.resolve(dt.datetime.now(dt.UTC)) if since else None
    root = open_source(data_dir, db, sources, parquet)
    report = ScanReport()
    on_shard, done = progress()
    try:
        with readable():
            workflows = as_source(root).workflows(report, since=low, on_shard=on_shard)
    finally:
        done()
    warn_skipped(report)
    if as_json:
        click.echo(render_workflows_json(workflows), nl=False)
    window = window_phrase(since, None)
    if not workflows:
        raise click.ClickException(f"no runs{window} in {runs_location(root)}")
    if not as_json:
        runs = sum(w.run_count for w in workflows)
        count = f"{len(workflows)} workflow{'s' * (len(workflows) != 1)}"
        click.echo(f"{count}, {runs} run{'s' * (runs != 1)}{window}, busiest first:\n")
        click.echo(render_workflows_table(workflows), nl=False)
