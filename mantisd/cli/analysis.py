"""Flags and helpers shared by the analysis features: `--by`, `--breakdown`, `--format`.

Beside `common.py` (the flags every read command has) so that the two can change apart. Only
click is imported at module level; the library is imported when a command runs.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mantisd.cli.common import progress, readable
from mantisd.text import printable

if TYPE_CHECKING:
    from mantisd.reader import ScanReport
    from mantisd.stats.query import StatsQuery
    from mantisd.stats.query_groups import Groups
    from mantisd.stats.runs import RunView
    from mantisd.stats.source import LogSource

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("table", "json", "csv")
#: `--by` fields offered in `--help` (any top-level extra key of the rows works too).
BY_HELP = "model, plan_signature, profile_id, tenant_id, status, or any extra top-level key"


def _check_by(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    from mantisd.stats.grouping import check_by

    try:
        check_by(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


def by_option(f: F) -> F:
    return click.option(
        "--by",
        "by",
        multiple=True,
        metavar="FIELD",
        callback=_check_by,
        help=f"Group runs by FIELD ({BY_HELP}); repeat for every combination. Rows without "
        "it form a (none) group; --last applies to each group.",
    )(f)


def breakdown_option(f: F) -> F:
    return click.option(
        "--breakdown",
        type=click.Choice(["wall_time", "cost"]),
        default="wall_time",
        show_default=True,
        help="Aggregate the wall-time buckets, or the numeric entries of cost_breakdown.",
    )(f)


def format_option(f: F) -> F:
    return click.option(
        "--format",
        "output",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="table, json (same as --json) or csv (for spreadsheets).",
    )(f)


def output_format(as_json: bool, output: str) -> str:
    """`--json` is `--format json`; together with another format it is a usage error."""
    if as_json and output not in ("table", "json"):
        raise click.UsageError(f"--json and --format {output} ask for two formats: give one")
    return "json" if as_json else output


def select_groups_with_progress(root: LogSource, query: StatsQuery) -> Groups:
    """`select_groups` of the source, with progress on a terminal (failures: `readable`)."""
    from mantisd.stats.source import as_source

    on_shard, done = progress()
    try:
        with readable():
            return as_source(root).select_groups(query, on_shard=on_shard)
    finally:
        done()


def runs_with_progress(root: LogSource, query: StatsQuery, report: ScanReport) -> list[RunView]:
    """Every selected run of `query` (the source's `runs`), with progress on a terminal
    (failures: `readable`)."""
    from mantisd.stats.source import as_source

    on_shard, done = progress()
    try:
        with readable():
            return as_source(root).runs(query, report, on_shard=on_shard)
    finally:
        done()


def components_to_show(asked: Sequence[str], reported: Collection[str]) -> list[str]:
    """`--bucket` with `--breakdown cost`: cost components, checked against the selected runs
    (there is no fixed list); by default every component reported, by name."""
    unknown = [name for name in asked if name not in reported]
    if unknown:
        raise click.BadParameter(
            f"{', '.join(map(repr, unknown))}: no selected run reports this cost_breakdown "
            f"entry as a number (reported: {printable(', '.join(sorted(reported))) or 'none'})",
            ctx=click.get_current_context(),
            param_hint="'--bucket'",
        )
    return list(asked) or sorted(reported)


def note_ignored(ignored: int) -> None:
    """Say on stderr how many `cost_breakdown` entries were not numbers (and so not counted)."""
    if ignored:
        click.echo(
            f"note: ignored {ignored} non-numeric cost_breakdown entr"
            f"{'y' if ignored == 1 else 'ies'} of the selected runs",
            err=True,
        )
