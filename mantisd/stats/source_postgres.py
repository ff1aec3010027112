"""`--db URL`: every read command (`stats`, `compare`, `trend`, `list`, `slowest`, `report`,
with `--by`, `--exemplars` and `--breakdown cost`) answered from the fleet's PostgreSQL.

The same query objects as the files (`mantisd.stats.source`), answered over `mantis.runs`
(every shipped data dir, or the `--source` ones):

- "Last N" is the N newest runs by `finished_at` (ties by `run_id`): there is no log order
  across pods. On one pod's log, whose shards are in `finished_at` order, both agree.
- `stats` gets its percentiles from PostgreSQL: `percentile_cont(ARRAY[0.5, 0.95, 0.99])
  WITHIN GROUP (ORDER BY x)`, one sort for the three, type 7 like the files' (numpy's linear);
  the floats may differ from the files' in the last bit.
- `compare` and `trend` fetch the values (sorted by PostgreSQL, as binary arrays) and compute
  the test and percentiles here, exactly as from files.
- Groups (`--by`) are fetched the same way, per group (`GROUP BY`); "last N" of each group
  is a window function (`row_number() OVER (PARTITION BY ...)`). A group key is rendered as
  the files render it (`mantisd.stats.source_postgres_runs.rendered_key`): values PostgreSQL
  tells apart but the files show alike (JSONB values of an extra key) are one group.
- Cost components (`--breakdown cost`) are read from each selected run's `cost_breakdown`
  by the files' own rule (`mantisd.stats.source_postgres_costs`).
- Single runs (`runs`: slowest, exemplars, the report) are fetched run by run
  (`mantisd.stats.source_postgres_runs`). So is a capped query grouped by an extra key: there
  the newest N of a rendered key must be chosen among the runs of all its JSONB values.
- Each answer is read in one `REPEATABLE READ`, read-only transaction: every statement of it
  sees the same snapshot while shippers keep loading.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any, Final

import psycopg
from psycopg import sql

from mantisd.fleet.database import FleetError, first_line, name_of
from mantisd.fleet.migrations import require_schema
from mantisd.reader import ScanReport
from mantisd.schema import BUCKETS, ROW_FIELDS, TOTAL
from mantisd.stats.costs import COST, WALL_TIME
from mantisd.stats.percentiles import REPORTED
from mantisd.stats.query import Selection, StatsQuery, ungrouped
from mantisd.stats.query_groups import Groups
from mantisd.stats.run_selections import add_to, groups_of
from mantisd.stats.runs import RunView
from mantisd.stats.source import OnShard, SourceError
from mantisd.stats.source_postgres_costs import cost_values
from mantisd.stats.source_postgres_runs import DETAILS, fetch_runs, key_expression, rendered_key
from mantisd.stats.workflows import WorkflowSummary

#: A `last` this large means every run of the window (no ORDER BY ... LIMIT).
NO_CAP: Final = 1 << 62
_FRACTIONS: Final = sql.SQL("ARRAY[{}]::double precision[]").format(
    sql.SQL(", ").join(sql.SQL(str(p / 100)) for p in REPORTED)
)
#: Which period of `edges` a run falls in (1 for the first).
_PERIOD: Final = sql.SQL("width_bucket(finished_at, %(edges)s)")
#: Columns a selection needs (the filters run on the table itself), per breakdown.
_SELECTED: Final = {
    WALL_TIME: sql.SQL(", ").join(
        map(sql.Identifier, ("run_id", "finished_at", TOTAL, *BUCKETS, "other_buckets"))
    ),
    COST: sql.SQL("run_id, finished_at, cost_breakdown"),
}
_NEWEST_FIRST: Final = sql.SQL("ORDER BY finished_at DESC, run_id DESC")


class UnknownSource(FleetError):
    """Raised when `--source` names no shipped source; the message lists the known ones."""


class PostgresSource:
    """The runs shipped to the database at `url`, all sources or only `sources` (each a
    `source_id` or a label; a label names every source that carries it)."""

    def __init__(self, url: str, sources: Sequence[str] = ()) -> None:
        self.conn: psycopg.Connection[Any] = psycopg.connect(
            url, application_name="mantis", connect_timeout=10, autocommit=True
        )
        try:
            self.conn.read_only = True
            self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with self.conn.transaction():
                require_schema(self.conn)
                self.source_ids, labels = self._resolve(sources)
        except BaseException:
            self.conn.close()
            raise
        self._where = name_of(url)
        if sources:
            self._where += f" (source {', '.join(labels)})"

    @property
    def where(self) -> str:
        return self._where

    def close(self) -> None:
        self.conn.close()

    def _resolve(self, names: Sequence[str]) -> tuple[list[Any], list[str]]:
        if not names:
            return [], []
        known = self.conn.execute(
            "SELECT source_id, label FROM mantis.sources ORDER BY label, source_id"
        ).fetchall()
        chosen: dict[Any, str] = {}
        for name in names:
            found = {
                sid: label
                for sid, label in known
                if name in (label, str(sid)) or name.lower() == str(sid)
            }
            if not found:
                listed = ", ".join(f"{label} ({sid})" for sid, label in known) or "none yet"
                raise UnknownSource(f"no source {name!r} in the database (sources: {listed})")
            chosen.update(found)
        return list(chosen), sorted(set(chosen.values()))

    # ------------------------------------------------------------------ the query object

    def _filters(self, query: StatsQuery) -> tuple[sql.Composable, dict[str, Any]]:
        """The WHERE clause of `query` (workflow, status, window, sources) and its params."""
        clauses = ["workflow_id = %(workflow)s"]
        params: dict[str, Any] = {"workflow": query.workflow_id}
        if query.status is not None:
            clauses.append("status = %(status)s")
            params["status"] = query.status
        if query.since is not None:
            clauses.append("finished_at >= %(since)s")
            params["since"] = query.since
        if query.until is not None:
            clauses.append("finished_at < %(until)s")
            params["until"] = query.until
        if self.source_ids:
            clauses.append("source_id = ANY(%(sources)s)")
            params["sources"] = self.source_ids
        return sql.SQL(" AND ".join(clauses)), params

    def _selected(
        self, query: StatsQuery, *, details: bool = False
    ) -> tuple[sql.Composable, dict[str, Any]]:
        """A subquery of the query's last N runs (every run of the window without a cap), with
        the group fields of `query.by` as text in columns `k0`, `k1`, ... (N runs of each);
        `details`: with what `runs` shows of a run besides its values."""
        where, params = self._filters(query)
        keys = [key_expression(name) for name in query.by]
        columns = sql.SQL(", ").join(
            [
                _SELECTED[query.breakdown],
                *([DETAILS] if details else []),
                *(
                    sql.SQL("{}::text AS {}").format(k, sql.Identifier(f"k{i}"))
                    for i, k in enumerate(keys)
                ),
            ]
        )
        selected = sql.SQL("SELECT {} FROM mantis.runs WHERE {}").format(columns, where)
        if query.last >= NO_CAP:
            return selected, params
        params["last"] = query.last
        if not keys:
            return selected + sql.SQL(" {} LIMIT %(last)s").format(_NEWEST_FIRST), params
        return sql.SQL(
            "SELECT * FROM (SELECT {}, row_number() OVER (PARTITION BY {} {}) AS nth "
            "FROM mantis.runs WHERE {}) r WHERE nth <= %(last)s"
        ).format(columns, sql.SQL(", ").join(keys), _NEWEST_FIRST, where), params

    def _aggregated(
        self,
        query: StatsQuery,
        group: Sequence[sql.Composable] = (),
        more: dict[str, Any] | None = None,
    ) -> list[tuple[tuple[Any, ...], Selection]]:
        """The selection of each value of the `group` expressions over the query's runs
        (one, key `()`, without), values sorted by PostgreSQL; `more`: their parameters."""
        selected, params = self._selected(query)
        if query.breakdown == COST:
            return cost_values(self.conn, selected, params | (more or {}), group)
        names = [TOTAL, *BUCKETS, *self._other_buckets(selected, params)]
        return self._values(selected, params | (more or {}), names, group)

    def _other_buckets(self, selected: sql.Composable, params: dict[str, Any]) -> list[str]:
        """Bucket names beyond the nine that some selected run reports."""
        rows = self.conn.execute(
            sql.SQL(
                "SELECT DISTINCT k FROM ({}) s, jsonb_object_keys(s.other_buckets) k ORDER BY k"
            ).format(selected),
            params,
        ).fetchall()
        return [name for (name,) in rows if name != TOTAL]

    # ------------------------------------------------------------------ answers

    def select(
        self, query: StatsQuery, *, on_shard: OnShard = None, percentiles: bool = False
    ) -> Selection:
        ungrouped(query)
        with self._reading():
            if percentiles and query.breakdown != COST:
                selected, params = self._selected(query)
                names = [TOTAL, *BUCKETS, *self._other_buckets(selected, params)]
                return self._percentiles(selected, params, names)
            ((_, selection),) = self._aggregated(query)
            return selection

    def select_many(
        self, queries: Sequence[StatsQuery], *, on_shard: OnShard = None
    ) -> list[Selection]:
        with self._reading():  # both windows from one snapshot
            return [self.select(query) for query in queries]

    def select_periods(
        self,
        query: StatsQuery,
        edges: Sequence[dt.datetime],
        *,
        on_shard: OnShard = None,
    ) -> tuple[list[Selection], ScanReport]:
        ungrouped(query)
        window = query.over_periods(edges)
        with self._reading():
            found = self._aggregated(window, [_PERIOD], {"edges": list(edges)})
        selections = [Selection() for _ in edges[1:]]
        for (period,), selection in found:  # width_bucket: period i (1-based): edges[i-1:i+1]
            selections[period - 1] = selection
        return selections, ScanReport()

    def select_groups(self, query: StatsQuery, *, on_shard: OnShard = None) -> Groups:
        if query.last < NO_CAP and any(name not in ROW_FIELDS for name in query.by):
            return groups_of(self.runs(query, ScanReport()))
        with self._reading():
            found = self._aggregated(query, [sql.Identifier(f"k{i}") for i in range(len(query.by))])
        groups = Groups()
        for raw, selection in found:
            if not selection.run_count:
                continue
            key = rendered_key(query.by, raw)
            if key in groups.selections:  # an extra key's JSONB values that render alike
                add_to(groups.selections[key], selection)
            else:
                groups.selections[key] = selection
        return groups

    def runs(
        self, query: StatsQuery, report: ScanReport, *, on_shard: OnShard = None
    ) -> list[RunView]:
        with self._reading():
            selected, params = self._selected(query, details=True)
            return fetch_runs(self.conn, selected, params, query, capped=query.last < NO_CAP)

    def workflows(
        self, report: ScanReport, *, since: dt.datetime | None = None, on_shard: OnShard = None
    ) -> list[WorkflowSummary]:
        clauses, params = ["TRUE"], dict[str, Any]()
        if since is not None:
            clauses.append("finished_at >= %(since)s")
            params["since"] = since
        if self.source_ids:
            clauses.append("source_id = ANY(%(sources)s)")
            params["sources"] = self.source_ids
        with self._reading():
            rows = self.conn.execute(
                sql.SQL(
                    "SELECT workflow_id, count(*), count(*) FILTER (WHERE status = 'failed'), "
                    "max(finished_at) FROM mantis.runs WHERE {} GROUP BY workflow_id "
                    "ORDER BY count(*) DESC, workflow_id"
                ).format(sql.SQL(" AND ".join(clauses))),
                params,
            ).fetchall()
        return [
            WorkflowSummary(workflow, count, failed, last.astimezone(dt.UTC))
            for workflow, count, failed, last in rows
        ]

    # ------------------------------------------------------------------ SQL

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """One read-only snapshot; a database error becomes a `SourceError` naming it."""
        try:
            with self.conn.transaction():
                yield
        except psycopg.Error as exc:
            raise SourceError(f"cannot query {self.where}: {first_line(exc)}") from None

    def _percentiles(
        self, selected: sql.Composable, params: dict[str, Any], names: Sequence[str]
    ) -> Selection:
        """Run count, and per bucket the count and p50/p95/p99 computed by PostgreSQL."""
        cells = sql.SQL(", ").join(
            sql.SQL("count({0}), percentile_cont({1}) WITHIN GROUP (ORDER BY {0})").format(
                _bucket(name), _FRACTIONS
            )
            for name in names
        )
        row = self.conn.execute(
            sql.SQL("SELECT count(*), {} FROM ({}) s").format(cells, selected), params
        ).fetchone()
        assert row is not None
        selection = Selection(run_count=row[0])
        for index, name in enumerate(names):
            count, values = row[1 + 2 * index], row[2 + 2 * index]
            if count:
                selection.counts[name] = count
                selection.percentiles[name] = tuple(values)
        return selection

    def _values(
        self,
        selected: sql.Composable,
        params: dict[str, Any],
        names: Sequence[str],
        group: Sequence[sql.Composable] = (),
    ) -> list[tuple[tuple[Any, ...], Selection]]:
        """Run count and each bucket's values, sorted by PostgreSQL: one `Selection` (key
        `()`, a count of 0 included), or one per value of the `group` expressions."""
        cells = sql.SQL(", ").join(
            [
                *group,
                sql.SQL("count(*)"),
                *(
                    sql.SQL("array_agg({0} ORDER BY {0}) FILTER (WHERE {0} IS NOT NULL)").format(
                        _bucket(name)
                    )
                    for name in names
                ),
            ]
        )
        statement = sql.SQL("SELECT {} FROM ({}) s").format(cells, selected)
        if group:
            statement += sql.SQL(" GROUP BY {}").format(
                sql.SQL(", ").join(sql.Literal(i + 1) for i in range(len(group)))
            )
        with self.conn.cursor(binary=True) as cur:
            rows = cur.execute(statement, params).fetchall()
        found = []
        for row in rows:
            key, (run_count, *columns) = tuple(row[: len(group)]), row[len(group) :]
            columns_of = zip(names, columns, strict=True)
            found.append((key, Selection.of_sorted_columns(run_count, columns_of)))
        return found


def _bucket(name: str) -> sql.Composable:
    """The SQL expression of a bucket's seconds (NULL where a run does not report it)."""
    if name == TOTAL or name in BUCKETS:
        return sql.Identifier(name)
    return sql.SQL("(other_buckets ->> {})::double precision").format(sql.Literal(name))
