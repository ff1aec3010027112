"""`mantis`: the operator's command line (`mantis runs list|stats|compare|trend`, `mantis db`,
`mantis dev`).

This module is the command tree; each command lives in its own module, imported only when
that command is asked for (`LazyGroup`), and imports its machinery when it runs, so that
`mantis --help` loads click and this file. Never imports anyio (design.md, layer 4).
"""

from __future__ import annotations

import click

from mantisd import __version__
from mantisd.cli.lazy import LazyGroup


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mantis")
def mantis() -> None:
    """Query the durable per-run log that mantisd keeps."""


@mantis.group(
    cls=LazyGroup,
    lazy_commands={
        "list": "mantisd.cli.list_runs:list_runs",
        "stats": "mantisd.cli.stats:stats",
        "compare": "mantisd.cli.compare:compare",
        "trend": "mantisd.cli.trend:trend",
        "slowest": "mantisd.cli.slowest:slowest",
        "report": "mantisd.cli.report:report",
        "ship": "mantisd.cli.ship:ship",
        "archive": "mantisd.cli.archive:archive",
        "export": "mantisd.cli.export:export",
    },
)
def runs() -> None:
    """Cross-run analytics over the run log: percentiles per wall-time bucket, regressions
    between two windows, and trends over time."""


@mantis.group(
    cls=LazyGroup,
    lazy_commands={"init": "mantisd.cli.db:init", "status": "mantisd.cli.db:status"},
)
def db() -> None:
    """The fleet's PostgreSQL: create its tables, see what each pod shipped."""


@mantis.group(
    cls=LazyGroup,
    hidden=True,
    lazy_commands={
        "generate": "mantisd.cli.dev:generate",
        "docs": "mantisd.cli.reference:docs",
    },
)
def dev() -> None:
    """Developer helpers: sample data."""


def main() -> None:
    """Console-script entry point."""
    mantis(prog_name="mantis")
