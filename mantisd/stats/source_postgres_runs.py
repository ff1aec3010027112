"""The PostgreSQL source's answers run by run (`RunSource.runs`): for `slowest`, `--exemplars`
and `report`, and, gathered by `mantisd.stats.run_selections`, for `--by` an extra key with a
`--last` cap (the newest N of a rendered key are chosen here, see below).

- "Last N" is the N newest by `finished_at` (ties by `run_id`), per group with `--by`: a
  window function (`row_number() OVER (PARTITION BY ...)`) keeps the newest N of each group
  in PostgreSQL, so only the runs that count cross the wire.
- Group keys. Typed columns (`model`, `status`, ...) are the key as they are. An extra key is
  read from the JSONB column `extra` (JSON null and a missing key are both "none"), and
  rendered here as the files render it (`mantisd.stats.grouping`: a string as itself, any
  other value as its canonical JSON). JSONB equality is finer than equality of rendered keys
  (the string `"3"` and the number `3` are two JSONB values, one key `3`), so PostgreSQL
  keeps the newest N of each JSONB value and this module the newest N of each rendered key:
  the union of the newest N of each part holds the newest N of the whole.
- Values: the nine bucket columns, `other_buckets` and `total_time_s`; for cost,
  `cost_breakdown` as JSON text through the files' own `numeric_costs` (JSONB keeps each
  number's exact decimal, so it yields the same floats, and the same ignored entries).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql

from mantisd.schema import BUCKETS, ROW_FIELDS, TOTAL
from mantisd.stats.canonical import canonical_text
from mantisd.stats.costs import COST, numeric_costs
from mantisd.stats.grouping import GroupKey
from mantisd.stats.query import StatsQuery
from mantisd.stats.runs import RunView

#: Columns a run brings beyond its values: what a post-mortem starts from.
DETAILS: Final = sql.SQL("status, model, plan_signature, error")
_WALL_TIME: Final = sql.SQL(", ").join(
    [sql.Identifier(TOTAL), *map(sql.Identifier, BUCKETS), sql.SQL("other_buckets::text")]
)
_COST: Final = sql.SQL("cost_breakdown::text")


def fetch_runs(
    conn: psycopg.Connection[Any],
    selected: sql.Composable,
    params: dict[str, Any],
    query: StatsQuery,
    *,
    capped: bool,
) -> list[RunView]:
    """The runs of the `selected` subquery (with `DETAILS` and the group fields `k0`, `k1`,
    ...), newest first; when `capped`, the newest `query.last` of each rendered group key."""
    keys = [sql.Identifier(f"k{i}") for i in range(len(query.by))]
    values = _COST if query.breakdown == COST else _WALL_TIME
    statement = sql.SQL(
        "SELECT run_id, finished_at, status, model, plan_signature, error::text, {} FROM ({}) s "
        "ORDER BY finished_at DESC, run_id DESC"
    ).format(sql.SQL(", ").join([values, *keys]), selected)
    with conn.cursor(binary=True) as cur:
        rows = cur.execute(statement, params).fetchall()
    return _views(rows, query, capped=capped)


def key_expression(name: str) -> sql.Composable:
    """A group field as SQL: its column, or an extra key's JSONB value (NULL for JSON null)."""
    if name in ROW_FIELDS:
        return sql.Identifier(name)
    return sql.SQL("NULLIF(extra -> {}, 'null'::jsonb)").format(sql.Literal(name))


def _views(rows: Sequence[Any], query: StatsQuery, *, capped: bool) -> list[RunView]:
    """`RunView`s of the fetched rows, the newest `query.last` of each rendered key."""
    cost = query.breakdown == COST
    width = 6 + (1 if cost else 2 + len(BUCKETS))
    numbers = (
        numeric_costs([row[6].encode() for row in rows])
        if cost
        else [(_seconds(row[6:width]), 0) for row in rows]
    )
    taken: Counter[GroupKey] = Counter()
    views = []
    for row, (values, ignored) in zip(rows, numbers, strict=True):
        key = rendered_key(query.by, row[width : width + len(query.by)])
        if capped and taken[key] >= query.last:
            continue
        taken[key] += 1
        views.append(RunView.of_row(row, _utc(row[1]), values, query.breakdown, key, ignored))
    return views


def _seconds(cells: Sequence[Any]) -> dict[str, float]:
    """A run's seconds from its total, nine bucket columns and `other_buckets` JSON text."""
    total, *nine, others = cells
    values = {name: value for name, value in zip(BUCKETS, nine, strict=True) if value is not None}
    if others is not None:
        decoded: dict[str, Any] = msgspec.json.decode(others)
        values.update((name, float(v)) for name, v in decoded.items() if name != TOTAL)
    values[TOTAL] = total
    return values


def rendered_key(by: Sequence[str], raw: Sequence[str | None]) -> GroupKey:
    """A group key as the files render it, from each field's text (an extra key's: the JSONB
    text of its value, `key_expression` as text)."""
    return tuple(
        _extra_key(value) if name not in ROW_FIELDS else value
        for name, value in zip(by, raw, strict=True)
    )


@functools.lru_cache(maxsize=4096)
def _extra_key(text: str | None) -> str | None:
    """An extra key's JSONB text as the files render it: a string as itself, else canonical."""
    if text is None:
        return None
    decoded = msgspec.json.decode(text)
    return decoded if isinstance(decoded, str) else canonical_text(text)


def _utc(instant: dt.datetime) -> dt.datetime:
    return instant.astimezone(dt.UTC)
