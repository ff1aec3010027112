"""Which rows `mantis runs stats` aggregates, and their seconds per bucket.

"Last N" is the N most recently logged rows that pass the workflow, status and time-window
(`since <= finished_at < until`) filters: the reader's order (newest shard first, later lines
first). The scan stops as soon as it holds N rows, so the default query costs the same however
many old months are kept. `select_periods` (for `trend`) splits a window into periods instead.

Speed: rows are decoded a block at a time into lean structs that hold only what the query
needs; the nine usual buckets decode into a struct (no per-row dict) and are gathered column by
column at C speed. A row with another bucket name falls back to a dict, in a slower loop.

Big queries (whole shards) are answered from the columnar cache instead, with the same
answers (`mantisd.stats.cached_query`; which queries: `mantisd.stats.cache_mode`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import gc
import itertools
import sys
from array import array
from bisect import bisect_right
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

import msgspec

from mantisd.paths import list_months
from mantisd.reader import CheckedRow, Scanner, ScanReport, json_needle
from mantisd.schema import BUCKETS, TOTAL, Seconds
from mantisd.stats.costs import BREAKDOWNS, COST, numeric_costs
from mantisd.stats.fanout import default_workers, fan_out
from mantisd.stats.grouping import check_by, extra_fields, with_extras

MaybeSeconds = Seconds | msgspec.UnsetType


class NineBuckets(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The page's nine buckets; a missing one is UNSET (an explicit null is invalid, as in
    `Row`). Any other bucket name refuses the row, which then decodes with a dict."""

    think: MaybeSeconds = msgspec.UNSET
    claude_extract: MaybeSeconds = msgspec.UNSET
    settle: MaybeSeconds = msgspec.UNSET
    claude_ground: MaybeSeconds = msgspec.UNSET
    perceive: MaybeSeconds = msgspec.UNSET
    load: MaybeSeconds = msgspec.UNSET
    act: MaybeSeconds = msgspec.UNSET
    claude_verify: MaybeSeconds = msgspec.UNSET
    overhead: MaybeSeconds = msgspec.UNSET


assert NineBuckets.__struct_fields__ == BUCKETS


class _Run(CheckedRow, gc=False):
    """A checked run with only the nine usual buckets (decoded without a dict)."""

    wall_time_breakdown: NineBuckets


class _AnyRun(CheckedRow, gc=False):
    """A checked run with any bucket names: the fallback when `_Run` refuses a row."""

    wall_time_breakdown: dict[str, Seconds]


@dataclass(frozen=True)
class StatsQuery:
    """What to aggregate: `status` None means every terminal status.

    The window is `since <= finished_at < until` (either edge may be open). `by`: the fields
    runs are grouped by (`mantisd.stats.grouping`), `last` then counts in each group (answered
    by `select_groups`). `breakdown`: the wall-time buckets and `total_time_s`, or the numeric
    entries of `cost_breakdown` (`mantisd.stats.costs`).
    """

    workflow_id: str
    last: int = 100
    status: str | None = "succeeded"
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    by: tuple[str, ...] = ()
    breakdown: str = "wall_time"

    def __post_init__(self) -> None:
        if self.last < 1:
            raise ValueError("last must be >= 1")
        if self.breakdown not in BREAKDOWNS:
            raise ValueError(f"breakdown must be one of {', '.join(BREAKDOWNS)}")
        check_by(self.by)

    def over_periods(self, edges: Sequence[dt.datetime]) -> StatsQuery:
        """Every run of `edges[0] <= finished_at < edges[-1]`, clipped by this query's own
        window, with no `last` cap: what `select_periods` reads, in every source."""
        if len(edges) < 2 or list(edges) != sorted(edges):
            raise ValueError("edges must be at least two instants in increasing order")
        return dataclasses.replace(
            self,
            last=sys.maxsize,
            since=max(edges[0], self.since) if self.since else edges[0],
            until=min(edges[-1], self.until) if self.until else edges[-1],
        )


@dataclass
class Selection:
    """The selected runs' seconds per bucket (`TOTAL` included), as sorted runs.

    `sorted_runs[bucket]` holds one sorted array per shard that contributed: percentiles are
    taken over their union without merging them (`percentiles_of_runs`), and the sorting
    happened in the workers that read the shards. A bucket counts only the runs that
    reported it, so it may hold fewer than `run_count` values.
    """

    run_count: int = 0
    sorted_runs: dict[str, list[array[float]]] = field(default_factory=dict)
    report: ScanReport = field(default_factory=ScanReport)
    #: `--breakdown cost`: the selected runs' non-numeric `cost_breakdown` entries.
    ignored: int = 0
    #: p50/p95/p99 per bucket, when a source's engine computed them instead of returning the
    #: values (`RunSource.select(..., percentiles=True)`, mantisd.stats.source); `counts`
    #: then says how many runs reported each bucket.
    percentiles: dict[str, tuple[float, ...]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of_sorted_columns(
        cls, run_count: int, columns: Iterable[tuple[str, Sequence[float] | None]]
    ) -> Selection:
        """A selection from an engine's already sorted values per bucket (None or empty:
        nobody reported the bucket)."""
        selection = cls(run_count=run_count)
        for name, values in columns:
            if values:
                selection.sorted_runs[name] = [array("d", values)]
        return selection

    def count(self, bucket: str) -> int:
        """How many selected runs reported `bucket`."""
        if bucket in self.counts:
            return self.counts[bucket]
        return sum(map(len, self.sorted_runs.get(bucket, ())))

    def reported(self) -> set[str]:
        """The buckets some selected run reported."""
        return set(self.sorted_runs) | set(self.counts)

    def values(self, bucket: str) -> list[float]:
        """Every value of `bucket`, sorted (for tests and small selections)."""
        return sorted(v for run in self.sorted_runs.get(bucket, ()) for v in run)


@dataclass
class ShardPart:
    """One shard's matching runs, newest first, as aligned columns (NaN: not reported).

    `keys` are the runs' `hash(run_id)`, so that runs seen in a newer shard can be dropped;
    `sorted_columns` are the columns without NaN, sorted, for when the whole part is taken.
    A cost part has no `total` (components do not add up) and counts each run's non-numeric
    entries in `ignored`.
    """

    keys: array[int] = field(default_factory=lambda: array("q"))
    total: array[float] = field(default_factory=lambda: array("d"))
    columns: dict[str, array[float]] = field(default_factory=dict)
    partial: set[str] = field(default_factory=set)
    sorted_columns: dict[str, array[float]] = field(default_factory=dict)
    report: ScanReport = field(default_factory=ScanReport)
    ignored: array[int] = field(default_factory=lambda: array("q"))

    def named_columns(self) -> dict[str, array[float]]:
        return {**self.columns, TOTAL: self.total} if self.total else dict(self.columns)

    def sort_columns(self) -> None:
        for name, column in self.named_columns().items():
            self.sorted_columns[name] = _sorted(column, name in self.partial)


def _sorted(values: Iterable[float], has_nan: bool) -> array[float]:
    if has_nan:
        values = [v for v in values if v == v]  # NaN: not reported
    return array("d", sorted(values))


_breakdown = attrgetter("wall_time_breakdown")
_total = attrgetter("total_time_s")
_cost = attrgetter("cost_breakdown")
_run_id = attrgetter("run_id")
_first = itemgetter(0)
_bucket_getters = [(name, attrgetter(name)) for name in BUCKETS]
NAN = float("nan")
EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)
LATEST = dt.datetime.max.replace(tzinfo=dt.UTC)
#: From this `--last` on, every shard goes to the workers at once (see `_parts`).
EAGER_FAN_OUT = 5000


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while a scan makes millions of short-lived acyclic objects: its passes
    would be pure cost."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def select(
    data_dir: Path,
    query: StatsQuery,
    *,
    on_shard: Callable[[int, int, str], None] | None = None,
    workers: int | None = None,
) -> Selection:
    """Scan the log newest first and collect the seconds of the query's last N runs.

    The newest shard is read here first; when the query needs older ones too (or asks for
    `EAGER_FAN_OUT` runs or more), `workers` forked processes (default: one per CPU, at most 4)
    read shards in parallel, merged back in the log's order. (Forked children share the
    parent's `str` hash secret, so their `hash(run_id)` keys agree.)
    """
    ungrouped(query)
    months = shard_months(data_dir, query)
    if _cache_wanted(data_dir, months, query, query.last):
        from mantisd.stats import cached_query

        return cached_query.select(data_dir, query, on_shard=on_shard, workers=workers)
    selection = Selection()
    seen: set[int] = set()
    parts = _parts(data_dir, months, query, selection, workers or default_workers())
    with _gc_paused(), contextlib.closing(parts):
        for index, month in enumerate(months):
            if on_shard:
                on_shard(index, len(months), month)
            _merge(selection, next(parts), seen, query.last)
            if selection.run_count >= query.last:
                break
    return selection


def select_many(
    data_dir: Path,
    queries: Sequence[StatsQuery],
    *,
    on_shard: Callable[[int, int, str], None] | None = None,
    workers: int | None = None,
) -> list[Selection]:
    """`[select(data_dir, q) for q in queries]`, with every shard read in one pool of workers.

    For queries that read whole windows (`last` of `EAGER_FAN_OUT` or more, as `compare`'s
    windows do), the shards of all of them go to the workers at once, so that both CPUs work
    while the smaller window is read. Queries with a small `last` go through `select`, which
    stops as soon as it has enough runs.
    """
    for query in queries:
        ungrouped(query)
    if any(q.last < EAGER_FAN_OUT for q in queries):
        return [select(data_dir, q, on_shard=on_shard, workers=workers) for q in queries]
    if any(_cache_wanted(data_dir, shard_months(data_dir, q), q, q.last) for q in queries):
        from mantisd.stats import cached_query

        return cached_query.select_many(data_dir, queries, on_shard=on_shard, workers=workers)
    jobs = [(i, month) for i, q in enumerate(queries) for month in shard_months(data_dir, q)]
    selections = [Selection() for _ in queries]
    seen: list[set[int]] = [set() for _ in queries]

    def work(job: tuple[int, str]) -> ShardPart:
        query = queries[job[0]]
        return read_shard(data_dir, job[1], query=query, cap=query.last)

    parts = fan_out(work, jobs, workers=workers or default_workers())
    with _gc_paused(), contextlib.closing(parts):
        for index, ((which, month), part) in enumerate(zip(jobs, parts, strict=True)):
            if on_shard:
                on_shard(index, len(jobs), month)
            _merge(selections[which], part, seen[which], queries[which].last)
    return selections


def select_periods(
    data_dir: Path,
    query: StatsQuery,
    edges: Sequence[dt.datetime],
    *,
    on_shard: Callable[[int, int, str], None] | None = None,
    workers: int | None = None,
) -> tuple[list[Selection], ScanReport]:
    """Every matching run of the query's window, one `Selection` per period.

    Period i is `edges[i] <= finished_at < edges[i + 1]`; the query's own window (`since`,
    `until`) may clip the first and last periods. There is no `last` cap: a trend wants every
    run. Shards are read in parallel as in `select` (all at once), merged newest first, so a
    `run_id` seen in a newer shard is dropped from older ones, whatever its period.
    """
    ungrouped(query)
    window = query.over_periods(edges)
    months = shard_months(data_dir, window)
    if _cache_wanted(data_dir, months, query, None):
        from mantisd.stats import cached_query

        return cached_query.select_periods(
            data_dir, query, edges, on_shard=on_shard, workers=workers
        )
    selections = [Selection() for _ in edges[1:]]
    report = ScanReport()
    seen: set[int] = set()
    work = functools.partial(read_shard_periods, data_dir, query=window, edges=tuple(edges))
    results = fan_out(work, months, workers=workers or default_workers())
    with _gc_paused(), contextlib.closing(results):
        for index, (month, (shard_report, parts)) in enumerate(zip(months, results, strict=True)):
            if on_shard:
                on_shard(index, len(months), month)
            report.add(shard_report)
            for selection, part in zip(selections, parts, strict=True):
                _merge(selection, part, seen, window.last)
    report.duplicates += sum(s.report.duplicates for s in selections)
    return selections, report


def read_shard_periods(
    data_dir: Path, month: str, *, query: StatsQuery, edges: Sequence[dt.datetime]
) -> tuple[ScanReport, list[ShardPart]]:
    """One shard's matching runs split by period (`edges` as in `select_periods`)."""
    report = ScanReport()
    parts = [ShardPart() for _ in edges[1:]]
    blocks = _scan_shard(data_dir, month, query, report)
    try:
        for rows in blocks:
            rows = _matching(rows, query)
            periods = [bisect_right(edges, row.finished_at) - 1 for row in rows]
            for period, group in itertools.groupby(zip(periods, rows, strict=True), _first):
                collect([row for _, row in group], parts[period], query.breakdown)
    finally:
        blocks.close()
    for part in parts:
        part.sort_columns()
    return report, parts


def shard_months(data_dir: Path, query: StatsQuery) -> list[str]:
    """The months whose shards may hold rows of the query's window, newest first.

    A row lives in the shard of its `finished_at` month, so shards before the month of `since`
    and after the month of the last instant before `until` are never opened.
    """
    oldest = None if query.since is None else _month_of(query.since)
    newest = None
    if query.until is not None:
        if query.until <= EARLIEST:
            return []
        newest = _month_of(query.until - _TICK)
    return [
        month
        for month in list_months(data_dir)
        if (oldest is None or month >= oldest) and (newest is None or month <= newest)
    ]


def _month_of(instant: dt.datetime) -> str:
    instant = instant.astimezone(dt.UTC)
    return f"{instant.year:04d}-{instant.month:02d}"


#: The resolution of timestamps: the last instant before `until` is `until - _TICK`.
_TICK = dt.timedelta(microseconds=1)


def _parts(
    data_dir: Path, months: list[str], query: StatsQuery, selection: Selection, workers: int
) -> Generator[ShardPart]:
    """Each month's `ShardPart`, newest first; older months in parallel once they are needed.

    Lazy: the cap of the older months is what the newest one left to find. A query for many
    runs (`EAGER_FAN_OUT` or more) is likely to need several months: all go to the workers.
    """
    if not months:
        return
    if query.last < EAGER_FAN_OUT:
        yield read_shard(data_dir, months[0], query=query, cap=query.last)
        months = months[1:]
    cap = query.last - selection.run_count
    yield from fan_out(
        functools.partial(read_shard, data_dir, query=query, cap=cap), months, workers=workers
    )


def read_shard(
    data_dir: Path,
    month: str,
    *,
    query: StatsQuery,
    cap: int,
    add: Callable[[list[Any], ShardPart], None] | None = None,
) -> ShardPart:
    """The newest `cap` matching runs of one month shard, put in the part by `add` (by
    default `collect` with the query's breakdown)."""
    add = add or functools.partial(collect, breakdown=query.breakdown)
    part = ShardPart()
    blocks = _scan_shard(data_dir, month, query, part.report)
    try:
        for rows in blocks:
            add(_matching(rows, query)[: cap - len(part.keys)], part)
            if len(part.keys) >= cap:
                break
    finally:
        blocks.close()
    part.sort_columns()
    return part


def _scan_shard(
    data_dir: Path, month: str, query: StatsQuery, report: ScanReport
) -> Generator[list[Any]]:
    """One shard's candidate rows in blocks, newest first (with the extra keys `by` names)."""
    extras = extra_fields(query.by)
    return Scanner(with_extras(_Run, extras), fallback=with_extras(_AnyRun, extras)).scan_blocks(
        data_dir,
        report,
        prefilter=json_needle(query.workflow_id),
        oldest_month=month,
        newest_month=month,
        shape_check=False,
    )


def _merge(selection: Selection, part: ShardPart, seen: set[int], last: int) -> None:
    """Append an older shard's runs after the newer ones, up to `last` runs in all."""
    selection.report.add(part.report)
    keys = part.keys
    fresh = set(keys)
    if len(fresh) == len(keys) and fresh.isdisjoint(seen):
        keep = None
    else:  # a run_id already seen in a newer shard (rare: duplicates share their month)
        keep = []
        for index, key in enumerate(keys):
            if key in seen:
                selection.report.duplicates += 1
            else:
                seen.add(key)
                keep.append(index)
    room = last - selection.run_count
    if keep is not None:
        keep = keep[:room]
        taken = len(keep)
    else:
        taken = min(room, len(keys))
        seen |= fresh if taken == len(keys) else set(keys[:taken])
    if not taken:
        return
    selection.run_count += taken
    if part.ignored:
        taken_rows = range(taken) if keep is None else keep
        selection.ignored += sum(part.ignored[i] for i in taken_rows)
    for name, column in part.named_columns().items():
        if keep is None and taken == len(keys):
            run = part.sorted_columns[name]
        elif keep is None:
            run = _sorted(column[:taken], name in part.partial)
        else:
            run = _sorted([column[i] for i in keep], name in part.partial)
        if run:
            selection.sorted_runs.setdefault(name, []).append(run)


def _cache_wanted(data_dir: Path, months: list[str], query: StatsQuery, last: int | None) -> bool:
    """Whether the columnar cache answers this query (`mantisd.stats.cache_mode`)."""
    from mantisd.stats import cache_mode

    def size() -> int:
        return cache_mode.log_bytes(data_dir, months)

    return cache_mode.wanted(query.breakdown, query.by, last, size)


def ungrouped(query: StatsQuery) -> None:
    """ValueError for a grouped query where every source answers it with `select_groups`."""
    if query.by:
        raise ValueError("a grouped query is answered per group: see select_groups")


def _matching(rows: list[Any], query: StatsQuery) -> list[Any]:
    """The rows of the query's workflow, status and window (the prefilter only narrows)."""
    workflow_id, status, since, until = query.workflow_id, query.status, query.since, query.until
    if since is None and until is None:
        if status is None:
            return [r for r in rows if r.workflow_id == workflow_id]
        return [r for r in rows if r.workflow_id == workflow_id and r.status == status]
    low = since if since is not None else EARLIEST
    high = until if until is not None else LATEST
    return [
        r
        for r in rows
        if r.workflow_id == workflow_id
        and (status is None or r.status == status)
        and low <= r.finished_at < high
    ]


def collect(rows: list[Any], part: ShardPart, breakdown: str) -> None:
    """Append matching rows to `part`: their keys, then the breakdown's numbers."""
    part.keys.extend(map(hash, map(_run_id, rows)))
    if breakdown == COST:
        costs = numeric_costs(list(map(_cost, rows)))
        part.ignored.extend(ignored for _, ignored in costs)
        _gather(rows, part, [numbers for numbers, _ in costs])
    else:
        part.total.extend(map(_total, rows))
        _gather(rows, part)


def _gather(rows: list[Any], part: ShardPart, breakdowns: list[Any] | None = None) -> None:
    """Append each row's bucket seconds (or the given `breakdowns`) to `part`'s columns, NaN
    where a row has no value."""
    if not rows:
        return
    before = len(part.keys) - len(rows)
    columns = part.columns
    if breakdowns is None:
        breakdowns = list(map(_breakdown, rows))
    if set(map(type, breakdowns)) <= {NineBuckets}:
        for name, getter in _bucket_getters:
            values = list(map(getter, breakdowns))
            try:
                block = array("d", values)
            except TypeError:  # some rows do not report this bucket
                block = array("d", [NAN if v is msgspec.UNSET else v for v in values])
                part.partial.add(name)
            _column(part, name, before).extend(block)
    else:
        for offset, breakdown in enumerate(breakdowns):
            items: Iterable[tuple[str, float | msgspec.UnsetType]] = (
                breakdown.items()
                if isinstance(breakdown, dict)
                else ((name, getter(breakdown)) for name, getter in _bucket_getters)
            )
            for name, value in items:
                if value is not msgspec.UNSET and name != TOTAL:
                    column = _column(part, name, before + offset)
                    column.append(value)
    for name, column in columns.items():
        if len(column) < len(part.keys):
            column.extend([NAN] * (len(part.keys) - len(column)))
            part.partial.add(name)


def _column(part: ShardPart, name: str, length: int) -> array[float]:
    """`part`'s column for `name`, padded with NaN up to `length` rows."""
    column = part.columns.get(name)
    if column is None:
        column = part.columns[name] = array("d")
    if len(column) < length:
        column.extend([NAN] * (length - len(column)))
        part.partial.add(name)
    return column
