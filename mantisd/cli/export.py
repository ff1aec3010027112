"""`mantis runs export --parquet DIR`: the log as a Parquet dataset every engine reads.

Thin over `mantisd.export.parquet`; DuckDB (`mantisd[duckdb]`) is imported only when the
command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from mantisd.cli.common import (
    UnreadableLog,
    data_dirs_option,
    resolve_window,
    time_option,
    warn_skipped,
)
from mantisd.stats.durations import TimeBound


@click.command("export")
@click.option(
    "--parquet",
    "target",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="The dataset's directory (created if missing): month=YYYY-MM/<source_id>.parquet.",
)
@data_dirs_option
@time_option("--since", "Export runs finished at or after")
@time_option("--until", "Export runs finished before")
def export(
    target: Path,
    data_dir: tuple[Path, ...],
    since: TimeBound | None,
    until: TimeBound | None,
) -> None:
    """Write the log of one or more data dirs as a Hive-partitioned Parquet dataset: one file
    per source and month, each written atomically, one row per run_id. Months whose files did
    not change since the last export are not rewritten. A month whose reading meets a damaged
    archive never replaces its earlier file: the command names it and exits 1."""
    import datetime as dt

    from mantisd.cli.common import log_root
    from mantisd.export.dataset import BIGINT_MAX, MissingDuckDB
    from mantisd.export.parquet import ExportError, export_parquet
    from mantisd.reader import ScanReport
    from mantisd.source_id import SourceIdError

    low, high = resolve_window(since, until, dt.datetime.now(dt.UTC))
    roots = [log_root(d) for d in data_dir or (None,)]
    report = ScanReport()
    written = unchanged = failed = 0
    try:
        for result in export_parquet(target, roots, report, since=low, until=high):
            where = f"{result.path.parent.name}/{result.path.name} ({result.label})"
            if result.too_large:
                click.echo(
                    f"warning: {where}: left out {result.too_large} run(s) whose "
                    f"schema_version, steps_executed or viable is beyond {BIGINT_MAX}, the "
                    "largest number a Parquet BIGINT column holds",
                    err=True,
                )
            if result.failed is not None:
                failed += 1
                click.echo(f"error: {where}: {result.failed}", err=True)
            if not result.written:
                if result.failed is None:
                    unchanged += 1
                continue
            written += 1
            line = f"wrote {where}: {result.rows} run(s)"
            if result.elsewhere:
                line += f", {result.elsewhere} already exported from another source"
            click.echo(line)
    except (MissingDuckDB, ExportError, SourceIdError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise UnreadableLog(exc) from None
    warn_skipped(report)
    click.echo(f"{written} file(s) written, {unchanged} unchanged, in {target}")
    if failed:
        raise click.ClickException(f"{failed} file(s) not exported whole: see above")
