"""`mantis runs ship`: load a data dir's run log into the fleet's PostgreSQL.

Thin over `mantisd.fleet`: psycopg is imported only when the command runs (`mantis` without
a database never loads it).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mantisd.cli.common import data_dir_option

if TYPE_CHECKING:
    from mantisd.fleet.plan import ShardPlan
    from mantisd.fleet.shipper import Shipper, ShipReport

URL_HELP = (
    "PostgreSQL URL (libpq: postgresql://user@host/db, postgresql:///db?host=/run/postgresql "
    "for a Unix socket); default $MANTIS_DATABASE_URL. Passwords: ~/.pgpass or PGPASSWORD."
)


@click.command()
@click.option("--to", "url", envvar="MANTIS_DATABASE_URL", metavar="URL", help=URL_HELP)
@data_dir_option
@click.option(
    "--label",
    metavar="NAME",
    help="This pod's name in the database (default: the data dir's label, first set to the "
    "host name).",
)
@click.option("--follow", is_flag=True, help="Keep tailing the shards until SIGTERM.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    default=0.25,
    show_default=True,
    help="--follow: seconds between two looks at the shards (the bound on the lag).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be shipped; move nothing.")
@click.option("--batch-rows", type=click.IntRange(min=1), default=None, hidden=True)
def ship(
    url: str | None,
    data_dir: Path | None,
    label: str | None,
    follow: bool,
    interval: float,
    dry_run: bool,
    batch_rows: int | None,
) -> None:
    """Ship every complete line of the run log not yet in PostgreSQL, exactly once.

    Rows go into one table for the whole fleet, tagged with this data dir's source id
    (source.json, created on the first run) and label. Lines that are not valid rows go to
    a dead-letter table. One-shot by default: prints what it loaded per shard and exits (1
    when the database cannot be reached: nothing is lost, run it again). --follow retries
    with backoff for as long as the database is away.
    """
    from mantisd.fleet.database import FleetError, name_of, require_driver
    from mantisd.paths import resolve_data_dir
    from mantisd.source_id import SourceIdError, check_label

    if not url:
        raise click.UsageError("no database: give --to URL or set MANTIS_DATABASE_URL")
    try:
        require_driver()
    except FleetError as exc:
        raise click.ClickException(str(exc)) from None
    if label is not None:
        try:
            check_label(label)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--label'") from None
    root = resolve_data_dir(data_dir)
    if not root.is_dir():
        raise click.ClickException(f"data dir {root} does not exist (see --data-dir)")
    target = name_of(url)
    try:
        if dry_run:
            _dry_run(root, url, target)
        elif follow:
            _follow(root, url, target, label, interval, batch_rows)
        else:
            _once(root, url, target, label, batch_rows)
    except (FleetError, SourceIdError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # the data dir or runs_log/ itself: gone, unreadable, a link
        raise click.ClickException(f"cannot read the run log in {root}: {exc}") from None


def _say(message: str) -> None:
    click.echo(message, err=True)


def _shipper(root: Path, url: str, label: str | None, batch_rows: int | None) -> Shipper:
    from mantisd.fleet.shipper import Shipper
    from mantisd.source_id import SourceIdentity, ensure_source

    source = ensure_source(root, label=label)
    if label is not None and label != source.label:
        source = SourceIdentity(source.source_id, label)
    options = {"batch_rows": batch_rows} if batch_rows else {}
    return Shipper(root, url, source, say=_say, **options)


def _once(root: Path, url: str, target: str, label: str | None, batch_rows: int | None) -> None:
    import psycopg

    from mantisd.fleet.database import first_line
    from mantisd.fleet.shipper import ShipReport

    shipper = _shipper(root, url, label, batch_rows)
    report = ShipReport()
    try:
        shipper.run_once(report)
    except psycopg.Error as exc:
        _print_report(shipper, target, report)
        raise click.ClickException(
            f"cannot ship to {target}: {first_line(exc, url)} (every batch above is committed; "
            "run again to resume)"
        ) from None
    _print_report(shipper, target, report)
    if report.problems:
        count = len(report.problems)
        raise click.ClickException(
            f"{count} {'file' if count == 1 else 'files'} of the log could not be read"
        )


def _follow(
    root: Path, url: str, target: str, label: str | None, interval: float, batch_rows: int | None
) -> None:
    from mantisd.fleet.shipper import Stopper

    shipper = _shipper(root, url, label, batch_rows)
    stop = Stopper()
    stop.install()
    try:
        _say(
            f"following {shipper.log_path} into {target} as {shipper.source.label} "
            f"({shipper.source.source_id}), every {interval}s"
        )
        report = shipper.follow(stop, interval=interval)
    finally:
        stop.close()
    _print_report(shipper, target, report)


def _print_report(shipper: Shipper, target: str, report: ShipReport) -> None:
    source = shipper.source
    click.echo(f"Shipped {shipper.log_path} as {source.label} ({source.source_id}) to {target}:")
    if not report.shards:
        click.echo("  nothing new to ship")
        return
    rows = [(name, done) for name, done in report.shards.items()]
    rows.append(("total", report.total()))
    width = _name_width(name for name, _ in rows)
    click.echo(f"  {'shard':<{width}}{'loaded':>10}{'duplicates':>12}{'dead-lettered':>15}")
    for name, done in rows:
        numbers = f"{done.loaded:>10}{done.duplicates:>12}{done.dead_lettered:>15}"
        click.echo(f"  {name:<{width}}{numbers}")


def _name_width(names: Iterable[str]) -> int:
    """The file name column's width: a month's shard, or its archive (`.jsonl.zst`), and a gap."""
    return max(16, *(len(name) + 2 for name in names))


def _dry_run(root: Path, url: str, target: str) -> None:
    import psycopg

    from mantisd.fleet.database import first_line
    from mantisd.fleet.plan import committed_cursors, plan
    from mantisd.fleet.shipper import CONNECT_OPTIONS
    from mantisd.source_id import read_source

    source = read_source(root)
    try:
        with psycopg.connect(url, **CONNECT_OPTIONS) as conn:  # type: ignore[arg-type]
            conn.read_only = True
            cursors = committed_cursors(conn, source.source_id if source else None)
    except psycopg.Error as exc:
        raise click.ClickException(
            f"cannot read the cursors in {target}: {first_line(exc, url)}"
        ) from None
    who = f"as {source.label} ({source.source_id})" if source else "as a new source"
    click.echo(f"Would ship {root / 'runs_log'} {who} to {target} (dry run: nothing moved):")
    _print_plan(plan(root, cursors))


def _print_plan(plans: list[ShardPlan]) -> None:
    if not plans:
        click.echo("  no shards")
        return
    width = _name_width(p.shard for p in plans)
    click.echo(f"  {'shard':<{width}}{'behind (bytes)':>16}{'lines':>10}  from")
    for p in plans:
        where = f"offset {p.start}" if p.start else "the start"
        if p.restart_reason:
            where += f" ({p.restart_reason})"
        click.echo(f"  {p.shard:<{width}}{p.behind_bytes:>16}{p.lines:>10}  {where}")
