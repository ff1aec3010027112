"""`mantis`: the operator's command line (`mantis runs list|stats|compare|trend`, `mantis dev`).

Only click is imported here; each command imports its machinery when it runs, so that
`mantis --help` stays fast. Never imports anyio (design.md, layer 4).
"""

from __future__ import annotations

import click

from mantisd import __version__
from mantisd.cli.archive import archive
from mantisd.cli.compare import compare
from mantisd.cli.db import db
from mantisd.cli.dev import dev
from mantisd.cli.export import export
from mantisd.cli.list_runs import list_runs
from mantisd.cli.reference import docs
from mantisd.cli.report import report
from mantisd.cli.ship import ship
from mantisd.cli.slowest import slowest
from mantisd.cli.stats import stats
from mantisd.cli.trend import trend


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mantis")
def mantis() -> None:
    """Query the durable per-run log that mantisd keeps."""


@mantis.group()
def runs() -> None:
    """Cross-run analytics over the run log: percentiles per wall-time bucket, regressions
    between two windows, and trends over time."""


runs.add_command(list_runs)
runs.add_command(stats)
runs.add_command(compare)
runs.add_command(trend)
runs.add_command(slowest)
runs.add_command(report)
runs.add_command(ship)
runs.add_command(archive)
runs.add_command(export)
mantis.add_command(dev)
mantis.add_command(db)
dev.add_command(docs)


def main() -> None:
    """Console-script entry point."""
    mantis(prog_name="mantis")
