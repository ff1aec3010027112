"""The body of `mantis runs compare` once its windows are known: select, test, correct, print.

Every comparison is a list of groups (one group, key `()`, without `--by`): each group's
buckets are tested, then the p-values of all of them are corrected together (one family,
`mantisd.stats.multiple`) before the verdicts are final and the rows ordered.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from mantisd.cli.analysis import components_to_show, note_ignored, select_groups_with_progress
from mantisd.cli.common import (
    buckets_to_show,
    note_partial_buckets,
    runs_of,
    select_many_with_progress,
    warn_skipped,
)
from mantisd.stats.durations import format_instant

if TYPE_CHECKING:
    from mantisd.stats.grouping import GroupKey
    from mantisd.stats.query import Selection, StatsQuery
    from mantisd.stats.render_compare import Window
    from mantisd.stats.render_compare_groups import GroupComparison
    from mantisd.stats.source import LogSource

#: Exit status when `--fail-on-regression` is given and a bucket regressed.
EXIT_REGRESSED = 3
Span = tuple[dt.datetime, dt.datetime]


@dataclass(frozen=True)
class Judging:
    """How to judge and print a comparison (the flags after the windows)."""

    buckets: Sequence[str]
    alpha: float
    min_effect: float
    correction: str
    output: str
    fail_on_regression: bool


def run_comparison(
    root: LogSource,
    queries: tuple[StatsQuery, StatsQuery],
    spans: tuple[Span, Span],
    judging: Judging,
) -> None:
    """Compare the baseline query's runs with the current one's (per group of their `by`),
    print the answer, and exit 3 on a regression when asked to."""
    from mantisd.stats.comparison import REGRESSED
    from mantisd.stats.grouping import label
    from mantisd.stats.render_compare import Window, change
    from mantisd.text import printable

    query = queries[1]
    before, after = _select(root, queries)
    windows = (
        Window(*spans[0], sum(s.run_count for s in before.values())),
        Window(*spans[1], sum(s.run_count for s in after.values())),
    )
    empty = [
        name for name, w in zip(("baseline", "current"), windows, strict=True) if not w.run_count
    ]
    groups = [] if empty else _compare(query, before, after, judging)
    if judging.output != "table":
        click.echo(_document(query, judging, windows, groups), nl=False)
    if empty:
        where = " and ".join(
            f"the {name} window ({_span(span)})"
            for name, span in zip(("baseline", "current"), spans, strict=True)
            if name in empty
        )
        raise click.ClickException(
            f"no {runs_of(query.workflow_id, query.status)} in {where}: nothing to compare"
        )
    _notes(query, groups, before, after)
    if judging.output == "table":
        _print_table(query, judging, windows, groups)
    regressed = [(g.key, row) for g in groups for row in g.rows if row.verdict == REGRESSED]
    if judging.fail_on_regression and regressed:
        names = ", ".join(
            f"{row.bucket} ({change(row.p50_change)})"
            + (f" for {label(query.by, key)}" if query.by else "")
            for key, row in regressed
        )
        click.echo(f"regressed: {printable(names)}", err=True)
        click.get_current_context().exit(EXIT_REGRESSED)


Side = Mapping["GroupKey", "Selection"]


def _select(root: LogSource, queries: tuple[StatsQuery, StatsQuery]) -> tuple[Side, Side]:
    """Each window's selection per group (one group `()` without `--by`); skips reported."""
    if queries[1].by:
        found = [select_groups_with_progress(root, q) for q in queries]
        for groups in found:
            warn_skipped(groups.report)
        return found[0].selections, found[1].selections
    before, after = select_many_with_progress(root, *queries)
    for selection in (before, after):
        warn_skipped(selection.report)
    return {(): before}, {(): after}


def _compare(
    query: StatsQuery, before: Side, after: Side, judging: Judging
) -> list[GroupComparison]:
    """Every group's rows, corrected as one family, ordered; groups busiest first."""
    from mantisd.stats.comparison import compare_buckets, ordered
    from mantisd.stats.costs import COST
    from mantisd.stats.fanout import default_workers
    from mantisd.stats.grouping import busiest_first
    from mantisd.stats.multiple import correct
    from mantisd.stats.query import Selection
    from mantisd.stats.render_compare_groups import GroupComparison

    cost = query.breakdown == COST
    empty = Selection()
    keys = busiest_first(
        (key, before.get(key, empty).run_count + after.get(key, empty).run_count)
        for key in dict.fromkeys([*before, *after])
    )
    reported = set().union(*(s.sorted_runs.keys() for s in [*before.values(), *after.values()]))
    if cost:
        shown = components_to_show(judging.buckets, reported)
    else:
        shown = buckets_to_show(judging.buckets, reported)
    raw = [
        compare_buckets(
            before.get(key, empty).sorted_runs,
            after.get(key, empty).sorted_runs,
            shown,
            alpha=judging.alpha,
            min_effect=judging.min_effect,
            workers=default_workers(),
            total=not cost,
        )
        for key in keys
    ]
    corrected = correct(
        raw, method=judging.correction, alpha=judging.alpha, min_effect=judging.min_effect
    )
    return [
        GroupComparison(
            key, before.get(key, empty).run_count, after.get(key, empty).run_count, ordered(rows)
        )
        for key, rows in zip(keys, corrected, strict=True)
    ]


def _document(
    query: StatsQuery,
    judging: Judging,
    windows: tuple[Window, Window],
    groups: Sequence[GroupComparison],
) -> str:
    """The JSON or CSV answer."""
    from mantisd.stats.render_compare import render_comparison_json
    from mantisd.stats.render_compare_groups import render_group_comparisons_json
    from mantisd.stats.render_csv import compare_csv

    if judging.output == "csv":
        pairs = [(g.key, g.rows) for g in groups]
        return compare_csv(query.workflow_id, query.by, pairs, breakdown=query.breakdown)
    baseline, current = windows
    if query.by:
        return render_group_comparisons_json(
            query.workflow_id,
            query.status,
            baseline,
            current,
            by=query.by,
            groups=groups,
            alpha=judging.alpha,
            min_effect=judging.min_effect,
            correction=judging.correction,
            breakdown=query.breakdown,
        )
    return render_comparison_json(
        query.workflow_id,
        query.status,
        baseline,
        current,
        rows=groups[0].rows if groups else [],
        alpha=judging.alpha,
        min_effect=judging.min_effect,
        correction=judging.correction,
        breakdown=query.breakdown,
    )


def _notes(query: StatsQuery, groups: Sequence[GroupComparison], before: Side, after: Side) -> None:
    """Buckets fewer runs reported, per group and window; ignored cost entries."""
    from mantisd.stats.costs import COST
    from mantisd.stats.grouping import label
    from mantisd.text import printable

    for g in groups:
        shown = [row.bucket for row in g.rows]
        group = f" ({printable(label(query.by, g.key))})" if query.by else ""
        for name, side in (("in the baseline", before), ("in the current window", after)):
            if g.key in side:
                note_partial_buckets(side[g.key], shown, where=f"{group} {name}")
    if query.breakdown == COST:
        note_ignored(sum(s.ignored for s in [*before.values(), *after.values()]))


def _print_table(
    query: StatsQuery,
    judging: Judging,
    windows: tuple[Window, Window],
    groups: Sequence[GroupComparison],
) -> None:
    from mantisd.stats.costs import COST, formatter
    from mantisd.stats.render_compare import render_comparison, render_header
    from mantisd.stats.render_compare_groups import render_group_comparisons

    format_value = formatter(query.breakdown) if query.breakdown == COST else None
    runs = runs_of(query.workflow_id, query.status)
    title = runs[0].upper() + runs[1:]
    if query.breakdown == COST:
        title = f"cost_breakdown of {runs}"
    if query.by:
        tests = sum(1 for g in groups for row in g.rows if row.p_value is not None)
        noun = "group" if len(groups) == 1 else "groups"
        title += f" per {', '.join(query.by)}, {len(groups)} {noun}, {tests} tests"
    baseline, current = windows
    header = render_header(
        title, baseline, current, judging.alpha, judging.min_effect, judging.correction
    )
    click.echo(header)
    if query.by:
        click.echo(render_group_comparisons(query.by, groups, format_value), nl=False)
    else:
        click.echo(render_comparison(groups[0].rows, format_value), nl=False)


def _span(window: Span) -> str:
    return f"{format_instant(window[0])} to {format_instant(window[1])}"
