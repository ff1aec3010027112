"""Selections made from runs: how a source that answers with runs (`RunSource.runs`) answers
the aggregate queries too.

The files build selections column by column as they read (`mantisd.stats.query`); a database
asked for the last N runs of groups it cannot tell apart by itself (an extra key's values
that render alike) hands back the runs themselves (`RunView`s), and these functions gather
their values into the same `Selection`s: each bucket's values sorted, counts and ignored
entries summed. The percentiles taken over them are the files' own arithmetic.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

from mantisd.stats.query import Selection
from mantisd.stats.query_groups import Groups
from mantisd.stats.runs import RunView


def selection_of(runs: Iterable[RunView]) -> Selection:
    """One selection of every run given (a bucket holds the runs that report it)."""
    selection = Selection()
    columns: dict[str, list[float]] = {}
    for run in runs:
        selection.run_count += 1
        selection.ignored += run.ignored
        for name, value in run.values.items():
            columns.setdefault(name, []).append(value)
    selection.sorted_runs = {name: [array("d", sorted(v))] for name, v in columns.items()}
    return selection


def groups_of(runs: Iterable[RunView]) -> Groups:
    """One selection per group key of the runs (`RunView.key`), groups with runs only."""
    by_key: dict[tuple[str | None, ...], list[RunView]] = {}
    for run in runs:
        by_key.setdefault(run.key, []).append(run)
    return Groups(selections={key: selection_of(chosen) for key, chosen in by_key.items()})


def add_to(selection: Selection, other: Selection) -> None:
    """Unite `other`'s runs with `selection`'s (runs that belong to one group)."""
    selection.run_count += other.run_count
    selection.ignored += other.ignored
    for name, runs in other.sorted_runs.items():
        selection.sorted_runs.setdefault(name, []).extend(runs)
