"""`--breakdown cost` from PostgreSQL: each numeric `cost_breakdown` entry's values, per group
(a period, a `--by` key, or the whole selection), and the entries ignored.

PostgreSQL selects the runs and hands back each one's `cost_breakdown` as JSON text; the
files' own rule (`mantisd.stats.costs.numeric_costs`: which entries count, which are ignored)
then reads them here. JSONB keeps each number's exact decimal, so the floats are the files'.
Why not in SQL: the same rule written twice could drift (booleans, integers beyond a
double's range), and it is not faster: one `jsonb_each` pass over 900,000 runs took 1.4 to
2.4 times as long as fetching their text and decoding it with msgspec (2 shared cores).
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from mantisd.stats.costs import numeric_costs
from mantisd.stats.query import Selection

Key = tuple[Any, ...]


def cost_values(
    conn: psycopg.Connection[Any],
    selected: sql.Composable,
    params: dict[str, Any],
    group: Sequence[sql.Composable] = (),
) -> list[tuple[Key, Selection]]:
    """One `Selection` per value of the `group` expressions over the `selected` subquery
    (which has `cost_breakdown`) that has runs: run count, ignored entries, each component's
    values sorted. Without `group`, exactly one (a count of 0 included)."""
    statement = sql.SQL("SELECT {} FROM ({}) s").format(
        sql.SQL(", ").join([*group, sql.SQL("cost_breakdown::text")]), selected
    )
    with conn.cursor(binary=True) as cur:
        rows = cur.execute(statement, params).fetchall()
    costs = numeric_costs([row[-1].encode() for row in rows])
    width = len(group)
    if width:
        by_key: dict[Key, list[tuple[dict[str, float], int]]] = {}
        for row, cost in zip(rows, costs, strict=True):
            by_key.setdefault(tuple(row[:width]), []).append(cost)
    else:
        by_key = {(): costs}
    return [(key, _selection(found)) for key, found in by_key.items()]


def _selection(costs: Sequence[tuple[dict[str, float], int]]) -> Selection:
    """The runs' components gathered column by column (each sorted), ignored entries summed."""
    numbers = [found for found, _ in costs]
    selection = Selection(run_count=len(costs), ignored=sum(ignored for _, ignored in costs))
    for name in sorted(set(itertools.chain.from_iterable(numbers))):
        values = [v for found in numbers if (v := found.get(name)) is not None]
        values.sort()
        selection.sorted_runs[name] = [array("d", values)]
    return selection
