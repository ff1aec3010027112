"""`mantis runs stats` with `--by`, `--exemplars`, `--breakdown cost` or `--format csv`.

The page's own `stats` (a table or its JSON) stays in `stats.py`, untouched by these flags;
this module answers the others, grouped or not, from the same query and the same percentiles.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from mantisd.cli.analysis import (
    components_to_show,
    note_ignored,
    runs_with_progress,
    select_groups_with_progress,
)
from mantisd.cli.common import (
    buckets_to_show,
    note_partial_buckets,
    runs_location,
    runs_of,
    select_with_progress,
    unknown_workflow,
    warn_skipped,
)
from mantisd.stats.query import StatsQuery
from mantisd.stats.source import LogSource


def stats_analysis(
    root: LogSource,
    query: StatsQuery,
    *,
    buckets: Sequence[str],
    exemplars: bool,
    output: str,
    window: str,
) -> None:
    """Select (per group), aggregate, and print in `output` (table, json or csv)."""
    from mantisd.reader import ScanReport
    from mantisd.stats.costs import COST, formatter
    from mantisd.stats.group_stats import attach_exemplars, exemplar_targets, group_stats
    from mantisd.stats.render import render_json, render_table
    from mantisd.stats.render_csv import stats_csv
    from mantisd.stats.render_groups import (
        render_exemplars,
        render_group_tables,
        render_groups_json,
    )
    from mantisd.stats.slowest import nearest_runs
    from mantisd.text import printable

    cost = query.breakdown == COST
    if query.by:
        found = select_groups_with_progress(root, query)
        report, pairs = found.report, found.busiest_first()
    else:
        selection = select_with_progress(root, query)
        report, pairs = selection.report, [((), selection)] if selection.run_count else []
    warn_skipped(report)
    run_count = sum(s.run_count for _, s in pairs)
    reported = set().union(*(s.sorted_runs.keys() for _, s in pairs))
    if not run_count:
        shown = list(buckets)
    elif cost:
        shown = components_to_show(buckets, reported)
    else:
        shown = buckets_to_show(buckets, reported)
    groups = [group_stats(key, s, shown, total=not cost) for key, s in pairs]
    if exemplars and run_count:
        runs = runs_with_progress(root, query, ScanReport())  # its skips were reported above
        attach_exemplars(groups, nearest_runs(runs, exemplar_targets(groups)))
    ignored = sum(s.ignored for _, s in pairs) if cost else None

    if output == "json" and query.by:
        click.echo(
            render_groups_json(
                query.workflow_id,
                query.by,
                groups,
                breakdown=query.breakdown,
                exemplars=exemplars,
                ignored=ignored,
            ),
            nl=False,
        )
    elif output == "json":
        extra: dict[str, object] = {}
        if exemplars:
            from mantisd.stats.render_groups import exemplars_document

            extra["exemplars"] = exemplars_document(groups[0]) if groups else {}
        if ignored is not None:
            extra["ignored_entries"] = ignored
        table = groups[0].stats if groups else []
        click.echo(
            render_json(
                query.workflow_id, run_count, table, breakdown=query.breakdown, extra=extra
            ),
            nl=False,
        )
    elif output == "csv":
        click.echo(
            stats_csv(
                query.workflow_id, query.by, groups, breakdown=query.breakdown, exemplars=exemplars
            ),
            nl=False,
        )
    if not run_count:
        raise click.ClickException(
            f"no {runs_of(query.workflow_id, query.status)}{window} in {runs_location(root)}"
            + unknown_workflow(root, query.workflow_id)
        )
    for key, selection in pairs:
        group = f" ({printable(_label(query.by, key))})" if query.by else ""
        note_partial_buckets(selection, shown, where=group)
    if ignored is not None:
        note_ignored(ignored)
    if output != "table":
        return
    format_value = formatter(query.breakdown) if cost else None
    across = "cost_breakdown across" if cost else "Across"
    if query.by:
        noun = "group" if len(groups) == 1 else "groups"
        click.echo(
            f"{across} last {query.last} {runs_of(query.workflow_id, query.status)}{window} "
            f"per {', '.join(query.by)}: {len(groups)} {noun}, {run_count} runs\n"
        )
        click.echo(
            render_group_tables(query.by, groups, format_value, exemplars=exemplars), nl=False
        )
        return
    phrase = runs_of(query.workflow_id, query.status, run_count)
    click.echo(f"{across} last {run_count} {phrase}{window}:\n")
    click.echo(render_table(groups[0].stats, format_value), nl=False)
    if exemplars:
        click.echo()
        click.echo(render_exemplars(groups[0], format_value), nl=False)


def _label(by: Sequence[str], key: tuple[str | None, ...]) -> str:
    from mantisd.stats.grouping import label

    return label(by, key)
