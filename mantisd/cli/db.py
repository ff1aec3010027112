"""`mantis db init` and `mantis db status`: the fleet's PostgreSQL, set up and looked at.

The shipper creates and migrates the schema by itself on every start; `init` is for a
database owner who wants the tables made before handing shippers a role that may only insert
(docs/fleet-postgres.md). psycopg is imported only when a command runs.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import click

from mantisd.cli.ship import URL_HELP

if TYPE_CHECKING:
    import psycopg


def _url_option(f: click.decorators.FC) -> click.decorators.FC:
    return click.option("--db", "url", envvar="MANTIS_DATABASE_URL", metavar="URL", help=URL_HELP)(
        f
    )


def _connect(url: str | None) -> psycopg.Connection[Any]:
    from mantisd.fleet.database import FleetError, require_driver

    if not url:
        raise click.UsageError("no database: give --db URL or set MANTIS_DATABASE_URL")
    try:
        require_driver()
    except FleetError as exc:
        raise click.ClickException(str(exc)) from None
    import psycopg

    from mantisd.fleet.database import first_line, name_of

    try:
        return psycopg.connect(url, application_name="mantis", connect_timeout=10)
    except psycopg.Error as exc:
        raise click.ClickException(
            f"cannot connect to {name_of(url)}: {first_line(exc, url)}"
        ) from None


@click.command()
@_url_option
def init(url: str | None) -> None:
    """Create the mantis tables (or upgrade them to this version's schema)."""
    import psycopg

    from mantisd.fleet.database import FleetError, first_line, name_of
    from mantisd.fleet.migrations import migrate

    conn = _connect(url)
    assert url
    with conn:
        try:
            version = migrate(conn)
        except FleetError as exc:
            raise click.ClickException(str(exc)) from None
        except psycopg.Error as exc:
            raise click.ClickException(
                f"cannot create the tables in {name_of(url)}: {first_line(exc)}"
            ) from None
    click.echo(f"mantis schema version {version} in {name_of(url)}")


@click.command()
@_url_option
def status(url: str | None) -> None:
    """Each shipped source (pod): its label, runs, dead-lettered lines, last shipment."""
    import psycopg

    from mantisd.fleet.database import FleetError, first_line, name_of
    from mantisd.fleet.migrations import current_version, require_schema

    conn = _connect(url)
    assert url
    with conn:
        try:
            conn.read_only = True
            require_schema(conn)
            version = current_version(conn)
            sources = conn.execute(
                "SELECT s.label, s.source_id, coalesce(r.runs, 0), coalesce(d.dead, 0), "
                "s.last_shipped_at FROM mantis.sources s "
                "LEFT JOIN (SELECT source_id, count(*) AS runs FROM mantis.runs "
                "GROUP BY source_id) r USING (source_id) "
                "LEFT JOIN (SELECT source_id, count(*) AS dead FROM mantis.dead_letters "
                "GROUP BY source_id) d USING (source_id) ORDER BY s.label, s.source_id"
            ).fetchall()
        except FleetError as exc:
            raise click.ClickException(str(exc)) from None
        except psycopg.Error as exc:
            raise click.ClickException(f"cannot read {name_of(url)}: {first_line(exc)}") from None
    click.echo(f"{name_of(url)}: mantis schema version {version}, {len(sources)} source(s)")
    if not sources:
        return
    width = max(len("label"), *(len(label) for label, *_ in sources))
    click.echo(f"\n{'label':<{width}}  {'source_id':<36}  {'runs':>10}  {'dead':>6}  last shipped")
    for label, source_id, runs, dead, shipped in sources:
        when = shipped.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        shown = label if label.isprintable() else ascii(label)
        click.echo(f"{shown:<{width}}  {source_id!s:<36}  {runs:>10}  {dead:>6}  {when}")
