"""`--parquet DIR`: `stats`, `compare`, `trend` and `list` answered by DuckDB from the dataset
`mantis runs export` writes (`mantisd.export.dataset`).

The same query objects as the files (`mantisd.stats.source`):

- "Last N" is the N newest runs by `finished_at` (ties by `run_id`), as from PostgreSQL.
- `stats` gets its percentiles from DuckDB's `quantile_cont` (type 7, numpy's linear: never
  `quantile`, which is the discrete one); `compare` and `trend` fetch the values, sorted by
  DuckDB, and compute the rest here exactly as from files.
- Months outside the window are pruned by the Hive partition (`month=YYYY-MM/`), and the
  column types are declared (the partition column's too), never sniffed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from mantisd.export.dataset import PARTITION, files_glob, require_duckdb, sql_string
from mantisd.reader import ScanReport
from mantisd.schema import BUCKETS, TOTAL
from mantisd.stats.percentiles import REPORTED
from mantisd.stats.query import Selection, StatsQuery
from mantisd.stats.query_groups import Groups
from mantisd.stats.runs import RunView, error_value, in_order
from mantisd.stats.source import OnShard, SourceError, UnsupportedQuery
from mantisd.stats.workflows import WorkflowSummary

_FRACTIONS: Final = "[" + ", ".join(str(p / 100) for p in REPORTED) + "]"
_NINE: Final = (TOTAL, *BUCKETS)


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
        if query.by:
            raise UnsupportedQuery("--by is not answered from Parquet yet: query the data dirs")
        if query.breakdown != "wall_time":
            raise UnsupportedQuery(
                f"--breakdown {query.breakdown} is not answered from Parquet yet: query the "
                "data dirs"
            )
        clauses, params = ["workflow_id = ?"], list[Any]([query.workflow_id])
        if query.status is not None:
            clauses.append("status = ?")
            params.append(query.status)
        if query.since is not None:
            clauses += ["finished_at >= ?", f"{PARTITION} >= ?"]
            params += [query.since, _month_of(query.since)]
        if query.until is not None:
            clauses += ["finished_at < ?", f"{PARTITION} <= ?"]
            params += [query.until, _month_of(query.until - dt.timedelta(microseconds=1))]
        return " AND ".join(clauses), params

    def _selected(self, query: StatsQuery) -> tuple[str, list[Any]]:
        """The query's last N runs (every run of the window when `last` is unbounded)."""
        where, params = self._filters(query)
        selected = f"SELECT * FROM {self._runs} WHERE {where}"
        if query.last < sys.maxsize:
            selected += " ORDER BY finished_at DESC, run_id DESC LIMIT ?"
            params.append(query.last)
        return selected, params

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
        selected, params = self._selected(query)
        if not percentiles:
            ((_, selection),) = self._values(selected, params) or [(1, Selection())]
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
        if len(edges) < 2 or list(edges) != sorted(edges):
            raise ValueError("edges must be at least two instants in increasing order")
        window = dataclasses.replace(
            query,
            last=sys.maxsize,
            since=max(edges[0], query.since) if query.since else edges[0],
            until=min(edges[-1], query.until) if query.until else edges[-1],
        )
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
        for period, selection in self._values(joined, [*params, *bounds], period="period"):
            selections[period] = selection
        return selections, ScanReport()

    def select_groups(self, query: StatsQuery, *, on_shard: OnShard = None) -> Groups:
        raise UnsupportedQuery("--by is not answered from Parquet yet: query the data dirs")

    def runs(
        self, query: StatsQuery, report: ScanReport, *, on_shard: OnShard = None
    ) -> list[RunView]:
        """The runs `select` aggregates, newest `finished_at` first."""
        selected, params = self._selected(query)
        nine = ", ".join(map(_column, _NINE))
        rows = self._fetch(
            "SELECT run_id, epoch_us(finished_at), status, model, plan_signature, error, "
            f"{nine}, other_buckets FROM ({selected}) s ORDER BY finished_at DESC, run_id DESC",
            params,
        )
        views = []
        for run_id, finished, status, model, plan_signature, error, *numbers in rows:
            values = {k: v for k, v in (numbers[-1] or {}).items() if k not in _NINE}
            values.update((k, v) for k, v in zip(_NINE, numbers, strict=False) if v is not None)
            views.append(
                RunView(
                    run_id=run_id,
                    finished_at=_instant(finished),
                    status=status,
                    model=model,
                    plan_signature=plan_signature,
                    error=None if error is None else error_value(error),
                    values=in_order(values, query.breakdown),
                )
            )
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
        self, selected: str, params: list[Any], *, period: str | None = None
    ) -> list[tuple[int, Selection]]:
        """Run count and each bucket's values sorted by DuckDB: one `Selection` (key 1) or
        one per value of the `period` column that has runs."""
        names = [*_NINE, *self._other_buckets(selected, params)]
        cells = ", ".join(
            f"list({c} ORDER BY {c}) FILTER (WHERE {c} IS NOT NULL)" for c in map(_column, names)
        )
        if period is None:
            sql = f"SELECT 1, count(*), {cells} FROM ({selected}) s"
        else:
            sql = f"SELECT {period}, count(*), {cells} FROM ({selected}) s GROUP BY 1 ORDER BY 1"
        found = []
        for key, run_count, *columns in self._fetch(sql, params):
            selection = Selection(run_count=run_count)
            for name, values in zip(names, columns, strict=True):
                if values:
                    selection.sorted_runs[name] = [array("d", values)]
            found.append((key, selection))
        return found


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


def _empty() -> str:
    from mantisd.export.dataset import COLUMNS

    return "SELECT " + ", ".join(f"NULL::{kind} AS {name}" for name, kind in COLUMNS) + " LIMIT 0"
