"""`--parquet DIR`: `stats`, `compare`, `trend`, `list`, `slowest` and `report` (with `--by`,
`--exemplars` and `--breakdown cost`) answered by DuckDB from the dataset `mantis runs export`
writes (`mantisd.export.dataset`).

The same query objects as the files (`mantisd.stats.source`):

- "Last N" is the N newest runs by `finished_at` (ties by `run_id`), as from PostgreSQL.
- `stats` gets its percentiles from DuckDB's `quantile_cont` (type 7, numpy's linear: never
  `quantile`, which is the discrete one); `compare` and `trend` fetch the values, sorted by
  DuckDB, and compute the rest here exactly as from files.
- Groups (`--by`) are DuckDB's `GROUP BY`; "last N" of each group is a window function
  (`row_number() OVER (PARTITION BY ...)`). An extra top-level key is read from the
  `extra_keys` map (its canonical JSON text, a string by its value, as the files group by); a
  dataset with files exported before that column existed is a usage error for it.
- Cost components (`--breakdown cost`) are read from each selected run's `cost_breakdown`
  JSON text by the files' own rule (`mantisd.stats.costs.numeric_costs`) and gathered like
  the runs of any source (`mantisd.stats.run_selections`), never written again in SQL.
- Months outside the window are pruned by the Hive partition (`month=YYYY-MM/`), and the
  column types are declared (the partition column's too), never sniffed.
"""

from __future__ import annotations

import bisect
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from mantisd.export.dataset import PARTITION, files_glob, require_duckdb, sql_string
from mantisd.reader import ScanReport
from mantisd.schema import BUCKETS, ROW_FIELDS, TOTAL
from mantisd.stats.costs import COST, numeric_costs
from mantisd.stats.grouping import extra_fields
from mantisd.stats.percentiles import REPORTED
from mantisd.stats.query import Selection, StatsQuery, ungrouped
from mantisd.stats.query_groups import Groups
from mantisd.stats.run_selections import groups_of, selection_of
from mantisd.stats.runs import RunView
from mantisd.stats.source import OnShard, SourceError, UnsupportedQuery
from mantisd.stats.workflows import WorkflowSummary

_FRACTIONS: Final = "[" + ", ".join(str(p / 100) for p in REPORTED) + "]"
_NINE: Final = (TOTAL, *BUCKETS)
_NEWEST_FIRST: Final = "ORDER BY finished_at DESC, run_id DESC"


class ParquetSource:
    """The runs of the Parquet dataset at `root` (every source in it)."""

    def __init__(self, root: Path) -> None:
        duckdb = require_duckdb()
        self.root = root
        self._error = duckdb.Error
        self.conn = duckdb.connect()
        self.conn.execute("SET enable_progress_bar = false")  # stdout is the answer's
        if any(root.glob(f"{PARTITION}=*/*.parquet")):
            self._runs = (
                f"read_parquet({sql_string(files_glob(root))}, hive_partitioning = true, "
                f"hive_types = {{'{PARTITION}': VARCHAR}}, union_by_name = true)"
            )
        else:  # an empty dataset holds no runs (DuckDB refuses a glob that matches nothing)
            self._runs = f"(SELECT NULL::VARCHAR AS {PARTITION}, * FROM ({_empty()}))"

    @property
    def where(self) -> str:
        return f"Parquet dataset {self.root}"

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------ the query object

    def _filters(self, query: StatsQuery) -> tuple[str, list[Any]]:
        extras = extra_fields(query.by)
        if extras:
            self._require_extra_keys(extras[0], query)
        clauses, params = ["workflow_id = ?"], list[Any]([query.workflow_id])
        if query.status is not None:
            clauses.append("status = ?")
            params.append(query.status)
        if query.since is not None:
            clauses += ["finished_at >= ?", f"{PARTITION} >= ?"]
            params += [query.since, _month_of(query.since)]
        if query.until is not None:
            clauses += ["finished_at < ?", f"{PARTITION} <= ?"]
            params += [query.until, _month_of(_before(query.until))]
        return " AND ".join(clauses), params

    def _selected(self, query: StatsQuery) -> tuple[str, list[Any]]:
        """The query's last N runs (every run of the window when `last` is unbounded), with
        the group fields of `query.by` in columns `k0`, `k1`, ... (N runs of each group)."""
        where, params = self._filters(query)
        keys = ", ".join(f"{_group_value(name)} AS k{i}" for i, name in enumerate(query.by))
        columns = f"*, {keys}" if keys else "*"
        if query.last >= sys.maxsize:
            return f"SELECT {columns} FROM {self._runs} WHERE {where}", params
        params.append(query.last)
        if not query.by:
            return (
                f"SELECT {columns} FROM {self._runs} WHERE {where} {_NEWEST_FIRST} LIMIT ?",
                params,
            )
        partition = ", ".join(map(_group_value, query.by))
        return (
            f"SELECT * FROM (SELECT {columns}, row_number() OVER (PARTITION BY {partition} "
            f"{_NEWEST_FIRST}) AS nth FROM {self._runs} WHERE {where}) r WHERE nth <= ?",
            params,
        )

    def _require_extra_keys(self, name: str, query: StatsQuery) -> None:
        """A usage error naming the files of the query's months that have no `extra_keys`
        column (exported by a mantis before it kept them): grouping would put all their runs
        under `(none)`."""
        low = "" if query.since is None else f"{PARTITION}={_month_of(query.since)}"
        high = "~" if query.until is None else f"{PARTITION}={_month_of(_before(query.until))}"
        files = [
            path
            for path in sorted(self.root.glob(f"{PARTITION}=*/*.parquet"))
            if low <= path.parent.name <= high
        ]
        if not files:
            return
        listed = ", ".join(map(sql_string, files))
        having = self._fetch(
            f"SELECT DISTINCT file_name FROM parquet_schema([{listed}]) WHERE name = 'extra_keys'"
        )
        without = [p for p in files if str(p) not in {found for (found,) in having}]
        if without:
            named = ", ".join(str(p.relative_to(self.root)) for p in without[:3])
            if len(without) > 3:
                named += f" and {len(without) - 3} more"
            raise UnsupportedQuery(
                f"--by {name}: {named} in {self.root} {'was' if len(without) == 1 else 'were'} "
                "exported by a mantis that did not keep the rows' extra keys: export those "
                f"months again (mantis runs export --parquet {self.root} --data-dir ...), or "
                "remove the files of months no log holds any more"
            )

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            rows: list[Any] = self.conn.execute(sql, list(params)).fetchall()
        except self._error as exc:
            raise SourceError(f"cannot query {self.where}: {exc}") from None
        return rows

    # ------------------------------------------------------------------ answers

    def select(
        self, query: StatsQuery, *, on_shard: OnShard = None, percentiles: bool = False
    ) -> Selection:
        ungrouped(query)
        if query.breakdown == COST:
            return selection_of(self.runs(query, ScanReport()))
        selected, params = self._selected(query)
        if not percentiles:
            ((_, selection),) = self._values(selected, params) or [((), Selection())]
            return selection
        cells = ", ".join(
            f"count({c}), quantile_cont({c}, {_FRACTIONS})" for c in map(_column, _NINE)
        )
        # One pass over the selection; whether it holds other buckets comes with it (asking
        # for their names in the same statement would sort the selection twice).
        (row,) = self._fetch(
            f"WITH sel AS ({selected}) SELECT count(*), max(cardinality(other_buckets)), {cells} "
            "FROM sel",
            params,
        )
        selection = Selection(run_count=row[0])
        found = list(zip(_NINE, row[2::2], row[3::2], strict=True))
        names = self._other_buckets(selected, params) if row[1] else []
        if names:
            more = ", ".join(
                f"count({c}), quantile_cont({c}, {_FRACTIONS})" for c in map(_column, names)
            )
            (extra,) = self._fetch(f"WITH sel AS ({selected}) SELECT {more} FROM sel", params)
            found += zip(names, extra[0::2], extra[1::2], strict=True)
        for name, count, values in found:
            if count:
                selection.counts[name] = count
                selection.percentiles[name] = tuple(values)
        return selection

    def select_many(
        self, queries: Sequence[StatsQuery], *, on_shard: OnShard = None
    ) -> list[Selection]:
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
        if query.breakdown == COST:
            return _by_period(self.runs(window, ScanReport()), edges), ScanReport()
        selected, params = self._selected(window)
        periods = " UNION ALL ".join(
            f"SELECT {k} AS period, ?::TIMESTAMPTZ AS low, ?::TIMESTAMPTZ AS high"
            for k in range(len(edges) - 1)
        )
        joined = (
            f"SELECT p.period, s.* FROM ({selected}) s JOIN ({periods}) p "
            "ON s.finished_at >= p.low AND s.finished_at < p.high"
        )
        bounds = [edge for k in range(len(edges) - 1) for edge in edges[k : k + 2]]
        selections = [Selection() for _ in edges[1:]]
        for (period,), selection in self._values(joined, [*params, *bounds], group=["period"]):
            selections[period] = selection
        return selections, ScanReport()

    def select_groups(self, query: StatsQuery, *, on_shard: OnShard = None) -> Groups:
        """One selection per group: wall time aggregated by DuckDB (`GROUP BY`), cost
        components gathered from the runs by the files' rule (`runs`)."""
        if query.breakdown == COST:
            return groups_of(self.runs(query, ScanReport()))
        selected, params = self._selected(query)
        found = self._values(selected, params, group=[f"k{i}" for i in range(len(query.by))])
        return Groups(selections={key: selection for key, selection in found})

    def runs(
        self, query: StatsQuery, report: ScanReport, *, on_shard: OnShard = None
    ) -> list[RunView]:
        """The runs `select` (or `select_groups`) aggregates, newest `finished_at` first; cost
        components read from each run's `cost_breakdown` text by the files' own rule
        (`mantisd.stats.costs.numeric_costs`)."""
        selected, params = self._selected(query)
        keys = "".join(f", k{i}" for i in range(len(query.by)))
        cost = query.breakdown == COST
        numbers = "cost_breakdown" if cost else ", ".join([*map(_column, _NINE), "other_buckets"])
        rows = self._fetch(
            "SELECT run_id, epoch_us(finished_at), status, model, plan_signature, error, "
            f"{numbers}{keys} FROM ({selected}) s {_NEWEST_FIRST}",
            params,
        )
        width = 7 if cost else 6 + len(_NINE) + 1
        found = (
            numeric_costs([row[6].encode() for row in rows])
            if cost
            else [(_seconds(row[6:width]), 0) for row in rows]
        )
        views = []
        for row, (values, ignored) in zip(rows, found, strict=True):
            finished = _instant(row[1])
            key = tuple(row[width:])
            views.append(RunView.of_row(row, finished, values, query.breakdown, key, ignored))
        return views

    def workflows(
        self, report: ScanReport, *, since: dt.datetime | None = None, on_shard: OnShard = None
    ) -> list[WorkflowSummary]:
        where, params = "TRUE", list[Any]()
        if since is not None:
            where = f"finished_at >= ? AND {PARTITION} >= ?"
            params = [since, _month_of(since)]
        rows = self._fetch(
            "SELECT workflow_id, count(*), count(*) FILTER (WHERE status = 'failed'), "
            f"epoch_us(max(finished_at)) FROM {self._runs} WHERE {where} GROUP BY workflow_id "
            "ORDER BY count(*) DESC, workflow_id",
            params,
        )
        return [
            WorkflowSummary(workflow, count, failed, _instant(last))
            for workflow, count, failed, last in rows
        ]

    # ------------------------------------------------------------------ values

    def _other_buckets(self, selected: str, params: list[Any]) -> list[str]:
        """Bucket names beyond the nine that some selected run reports, sorted."""
        rows = self._fetch(
            f"SELECT DISTINCT k FROM ({selected}) s, unnest(map_keys(s.other_buckets)) t(k) "
            "ORDER BY k",
            params,
        )
        return [name for (name,) in rows if name not in _NINE]

    def _values(
        self, selected: str, params: list[Any], *, group: Sequence[str] = ()
    ) -> list[tuple[tuple[Any, ...], Selection]]:
        """Run count and each bucket's values sorted by DuckDB: one `Selection` (key `()`)
        or one per value of the `group` columns that has runs."""
        names = [*_NINE, *self._other_buckets(selected, params)]
        cells = ", ".join(
            f"list({c} ORDER BY {c}) FILTER (WHERE {c} IS NOT NULL)" for c in map(_column, names)
        )
        sql = f"SELECT {''.join(f'{g}, ' for g in group)}count(*), {cells} FROM ({selected}) s"
        if group:
            sql += " GROUP BY ALL"
        found = []
        for row in self._fetch(sql, params):
            key, (run_count, *columns) = tuple(row[: len(group)]), row[len(group) :]
            columns_of = zip(names, columns, strict=True)
            found.append((key, Selection.of_sorted_columns(run_count, columns_of)))
        return found


def _seconds(cells: Sequence[Any]) -> dict[str, float]:
    """A run's seconds from the nine columns (total first) and `other_buckets`."""
    *nine, others = cells
    values = {k: v for k, v in (others or {}).items() if k not in _NINE}
    values.update((k, v) for k, v in zip(_NINE, nine, strict=True) if v is not None)
    return values


def _by_period(runs: Sequence[RunView], edges: Sequence[dt.datetime]) -> list[Selection]:
    """The runs' selection of each period `edges[i] <= finished_at < edges[i+1]`."""
    periods: list[list[RunView]] = [[] for _ in edges[1:]]
    for run in runs:
        index = bisect.bisect_right(edges, run.finished_at) - 1
        if 0 <= index < len(periods):
            periods[index].append(run)
    return [selection_of(chosen) for chosen in periods]


def _column(name: str) -> str:
    """The SQL expression of a bucket's seconds (NULL where a run does not report it)."""
    if name in _NINE:
        return f'"{name}"'
    return f"other_buckets[{sql_string(name)}]"


def _month_of(instant: dt.datetime) -> str:
    utc = instant.astimezone(dt.UTC)
    return f"{utc.year:04d}-{utc.month:02d}"


def _instant(epoch_us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=epoch_us)


def _before(instant: dt.datetime) -> dt.datetime:
    """The last instant before `instant` (an exclusive `until`'s month is this one's)."""
    return instant - dt.timedelta(microseconds=1)


def _group_value(name: str) -> str:
    """A `--by` field's group value in SQL: its column, or for an extra key the text the files
    group by (a string's value, else its canonical JSON text; NULL when null or missing)."""
    if name in ROW_FIELDS:
        return f'"{name}"'
    value = f"extra_keys[{sql_string(name)}]"
    return (
        f"CASE WHEN {value} IS NULL OR {value} = 'null' THEN NULL WHEN json_type({value}) = "
        f"'VARCHAR' THEN json_extract_string({value}, '$') ELSE {value} END"
    )


def _empty() -> str:
    from mantisd.export.dataset import COLUMNS

    return "SELECT " + ", ".join(f"NULL::{kind} AS {name}" for name, kind in COLUMNS) + " LIMIT 0"
