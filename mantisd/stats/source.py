"""Where runs come from: the one seam between the commands and the engines that hold the log.

A source answers a query object (`StatsQuery`: workflow, status, window, last N, grouping,
breakdown) with `Selection`s: per bucket, the selected values (as sorted runs), or, where its
engine computes them and the caller asked only for percentiles, the percentiles themselves
(`Selection.percentiles`, with `Selection.counts`); `runs` answers with the selected runs
themselves (`RunView`: slowest, exemplars, the report). Flags, rendering and the comparison
logic above it are shared, and one parity test suite runs against every source, so that each
prints the same answer (design.md, "Fleet"); a new engine is one new source.

- The files (`FileSource`, the default): a data dir read by `mantisd.stats.query`. A data dir
  `Path` stands for its file source wherever a source is taken (`as_source`).
- PostgreSQL (`mantisd.stats.source_postgres.PostgresSource`, `--db URL`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeAlias

if TYPE_CHECKING:
    from mantisd.reader import ScanReport
    from mantisd.stats.query import Selection, StatsQuery
    from mantisd.stats.query_groups import Groups
    from mantisd.stats.runs import RunView
    from mantisd.stats.workflows import WorkflowSummary

OnShard: TypeAlias = "Callable[[int, int, str], None] | None"


class SourceError(Exception):
    """Raised when a source cannot answer at all (a database that went away, refused): the
    command exits as for an unreadable log. The message names the source, never a password."""


class UnsupportedQuery(SourceError):
    """Raised for a query a source does not answer (yet): the command's usage error."""


class RunSource(Protocol):
    """What every source answers. `on_shard` reports progress where there are shards."""

    @property
    def where(self) -> str:
        """Where the runs are, for messages (`in <where>`): a directory, a database."""
        ...

    def select(
        self, query: StatsQuery, *, on_shard: OnShard = None, percentiles: bool = False
    ) -> Selection:
        """The query's last N runs. `percentiles`: the caller needs only p50/p95/p99 per
        bucket, so the source may return those (and counts) instead of the values."""
        ...

    def select_many(
        self, queries: Sequence[StatsQuery], *, on_shard: OnShard = None
    ) -> list[Selection]:
        """`select` of each query, values included (compare's windows)."""
        ...

    def select_periods(
        self,
        query: StatsQuery,
        edges: Sequence[dt.datetime],
        *,
        on_shard: OnShard = None,
    ) -> tuple[list[Selection], ScanReport]:
        """Every run of the window, one selection per period `edges[i] <= t < edges[i+1]`."""
        ...

    def select_groups(self, query: StatsQuery, *, on_shard: OnShard = None) -> Groups:
        """One selection per group of `query.by` (`last` counts in each group)."""
        ...

    def runs(
        self, query: StatsQuery, report: ScanReport, *, on_shard: OnShard = None
    ) -> list[RunView]:
        """The very runs `select` (or `select_groups`) aggregates for `query`, newest first,
        each with its `run_id`, values and details (slowest, exemplars, the report); what the
        read skipped goes to `report`."""
        ...

    def workflows(
        self, report: ScanReport, *, since: dt.datetime | None = None, on_shard: OnShard = None
    ) -> list[WorkflowSummary]:
        """Every workflow with runs (finished at or after `since`), busiest first."""
        ...


#: A source, or a data dir (its file source).
LogSource: TypeAlias = "Path | RunSource"


class FileSource:
    """The month shards of a data dir (`mantisd.stats.query`): values, never percentiles."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def where(self) -> str:
        from mantisd.paths import runs_log_dir

        return str(runs_log_dir(self.root))

    def select(
        self, query: StatsQuery, *, on_shard: OnShard = None, percentiles: bool = False
    ) -> Selection:
        from mantisd.stats.query import select

        return select(self.root, query, on_shard=on_shard)

    def select_many(
        self, queries: Sequence[StatsQuery], *, on_shard: OnShard = None
    ) -> list[Selection]:
        from mantisd.stats.query import select_many

        return select_many(self.root, queries, on_shard=on_shard)

    def select_periods(
        self,
        query: StatsQuery,
        edges: Sequence[dt.datetime],
        *,
        on_shard: OnShard = None,
    ) -> tuple[list[Selection], ScanReport]:
        from mantisd.stats.query import select_periods

        return select_periods(self.root, query, edges, on_shard=on_shard)

    def select_groups(self, query: StatsQuery, *, on_shard: OnShard = None) -> Groups:
        from mantisd.stats.query_groups import select_groups

        return select_groups(self.root, query, on_shard=on_shard)

    def runs(
        self, query: StatsQuery, report: ScanReport, *, on_shard: OnShard = None
    ) -> list[RunView]:
        from mantisd.stats.runs import iter_runs

        return list(iter_runs(self.root, query, report, on_shard=on_shard))

    def workflows(
        self, report: ScanReport, *, since: dt.datetime | None = None, on_shard: OnShard = None
    ) -> list[WorkflowSummary]:
        from mantisd.stats.workflows import summarize

        return summarize(self.root, report, since=since, on_shard=on_shard)


def as_source(source: LogSource) -> RunSource:
    """`source` itself, or the file source of a data dir."""
    return FileSource(source) if isinstance(source, Path) else source


def where(source: LogSource) -> str:
    """Where `source` keeps its runs, for messages."""
    return as_source(source).where
