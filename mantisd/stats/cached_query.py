"""`select`, `select_many` and `select_periods` answered from the columnar cache.

The answers are the log's (`mantisd.stats.query`), to the last digit and to the counts of
skipped lines and duplicates:

- A month's rows are its files' segments (`mantisd.stats.cache`), newest first: the reader's
  order. A query's rows are those of its workflow and status partitions inside its window; a
  month's part is the newest `cap` of them, the caps chosen as `select` chooses them.
- The reader drops a row whose `run_id` it met earlier in the month among the lines that
  mention the workflow, and the workflow's own rows always do. So where a key repeats only
  among the workflow's rows, the newest row is kept; where a repeated key involves another
  workflow's row (whose line may or may not mention the workflow), the month is read from
  the log, as is a month whose cap stops the reader partway through it while it holds
  unreadable lines or duplicates (where the reader stops decides what it counts), and a
  month that could not be cached.
- Unreadable lines are counted when they mention the workflow or hold an escape (the
  reader's prefilter), over-long lines always.
- Across months, a run taken from a newer month drops the older month's rows of that run.
  When no key repeats among the months read (checked with one sort), months are merged
  without a set of keys; otherwise, and whenever a month is read from the log, they go through
  `_merge` itself.
- A partition all of whose rows are taken adds its stored sorted columns: nothing is sorted
  at query time. Other rows' columns are gathered and sorted with numpy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from mantisd.reader import ScanReport
from mantisd.stats.cache import Month, opened_cache
from mantisd.stats.fanout import default_workers
from mantisd.stats.log_parts import read_month, read_month_periods
from mantisd.stats.month_view import MonthView, add_runs, micros
from mantisd.stats.query import (
    EAGER_FAN_OUT,
    Selection,
    StatsQuery,
    _gc_paused,
    _merge,
    shard_months,
)
from mantisd.stats.segment import Array, DamagedSegment

OnShard = Callable[[int, int, str], None] | None


# ------------------------------------------------------------------------------ select


def _caps(query: StatsQuery) -> Callable[[int, int], int]:
    """The cap of the month at `index` given the runs taken from the first month, as
    `select` sets them (every month `last` for a big query; else the first month `last`,
    the others what it left)."""

    def cap(index: int, after_first: int) -> int:
        if query.last >= EAGER_FAN_OUT or index == 0:
            return query.last
        return query.last - after_first

    return cap


class _Retry(Exception):
    """A segment turned out damaged while read (it is removed): answer again."""


@contextlib.contextmanager
def _damage_removed() -> Iterator[None]:
    """A damaged segment is removed (while its directory is still open), then `_Retry`."""
    try:
        yield
    except DamagedSegment as exc:
        if exc.where is not None:
            dir_fd, name = exc.where
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dir_fd)
        raise _Retry from exc


def select(
    data_dir: Path,
    query: StatsQuery,
    *,
    on_shard: OnShard = None,
    workers: int | None = None,
    every_month: bool = False,
) -> Selection:
    """`mantisd.stats.query.select`, from the cache (from the log, should segments keep
    turning out damaged). `every_month`: as `select_many`'s pool does, the months past the
    one where the N-th run was found are read too (what they skip is counted)."""
    months = shard_months(data_dir, query)
    for _ in range(_ATTEMPTS):
        with contextlib.suppress(_Retry):
            return _select(
                data_dir, query, months, on_shard, workers or default_workers(), every_month
            )
    selection = Selection()
    seen: set[int] = set()
    cap_of, after_first = _caps(query), 0
    with _gc_paused():
        for index, month in enumerate(months):
            if on_shard:
                on_shard(index, len(months), month)
            part = read_month(data_dir, month, query, cap_of(index, after_first))
            _merge(selection, part, seen, query.last)
            if index == 0:
                after_first = selection.run_count
            if selection.run_count >= query.last and not every_month:
                break
    return selection


#: Answers tried from the cache before reading the log instead.
_ATTEMPTS = 3


def _select(
    data_dir: Path,
    query: StatsQuery,
    months: list[str],
    on_shard: OnShard,
    workers: int,
    every_month: bool,
) -> Selection:
    selection = Selection()
    if not months:
        return selection
    cap_of = _caps(query)
    with opened_cache(data_dir) as cache, _gc_paused(), _damage_removed():
        if cache is None:
            return selection
        loaded = cache.months(months, workers=workers)
        with contextlib.closing(loaded):
            views: list[MonthView] = []
            taken = 0
            after_first = 0
            for index, month in enumerate(loaded):
                if on_shard:
                    on_shard(index, len(months), month.month)
                view = MonthView(month, query)
                views.append(view)
                cap = cap_of(index, after_first)
                if view.needs_log(cap):
                    break
                part, _ = view.capped(cap)
                taken += min(len(part), query.last - taken)
                if index == 0:
                    after_first = taken
                if taken >= query.last and not every_month:
                    break
            if not any(v.needs_log(cap_of(i, after_first)) for i, v in enumerate(views)):
                if _no_repeats(views, cap_of, after_first):
                    return _merge_views(selection, views, query, cap_of, after_first)
            return _merge_exact(
                data_dir, selection, views, loaded, query, len(months), on_shard, every_month
            )


def _no_repeats(
    views: Sequence[MonthView], cap_of: Callable[[int, int], int], after_first: int
) -> bool:
    """Whether no key repeats among the months' parts (so no run is dropped across months)."""
    if len(views) < 2:
        return True
    keys = np.concatenate(
        [v.row_keys[: len(v.capped(cap_of(i, after_first))[0])] for i, v in enumerate(views)]
    )
    keys.sort()
    return not bool((keys[1:] == keys[:-1]).any())


def _merge_views(
    selection: Selection,
    views: Sequence[MonthView],
    query: StatsQuery,
    cap_of: Callable[[int, int], int],
    after_first: int,
) -> Selection:
    for index, view in enumerate(views):
        cap = cap_of(index, after_first)
        part, _ = view.capped(cap)
        selection.report.add(view.report(cap))
        part = part[: query.last - selection.run_count]
        if len(part):
            selection.run_count += len(part)
            add_runs(selection, view.runs(part))
    return selection


def _merge_exact(
    data_dir: Path,
    selection: Selection,
    views: list[MonthView],
    loaded: Iterator[Month],
    query: StatsQuery,
    count: int,
    on_shard: OnShard,
    every_month: bool,
) -> Selection:
    """Months merged by `_merge` (with its set of keys), those the cache cannot answer read
    from the log; more months loaded as needed."""
    seen: set[int] = set()
    cap_of = _caps(query)
    after_first = 0
    index = 0
    while True:
        if index < len(views):
            view = views[index]
        else:
            month = next(loaded, None)
            if month is None:
                break
            if on_shard:
                on_shard(index, count, month.month)
            view = MonthView(month, query)
            views.append(view)
        cap = cap_of(index, after_first)
        if view.needs_log(cap):
            part = read_month(data_dir, view.month.month, query, cap)
        else:
            part = view.shard_part(cap)
        _merge(selection, part, seen, query.last)
        if index == 0:
            after_first = selection.run_count
        index += 1
        if selection.run_count >= query.last and not every_month:
            break
    return selection


def select_many(
    data_dir: Path,
    queries: Sequence[StatsQuery],
    *,
    on_shard: OnShard = None,
    workers: int | None = None,
) -> list[Selection]:
    """`mantisd.stats.query.select_many` (its queries read whole windows), from the cache:
    one query after the other (the segments the first one builds serve the second)."""
    return [
        select(data_dir, q, on_shard=on_shard, workers=workers, every_month=True) for q in queries
    ]


# ------------------------------------------------------------------------------ periods


def select_periods(
    data_dir: Path,
    query: StatsQuery,
    edges: Sequence[dt.datetime],
    *,
    on_shard: OnShard = None,
    workers: int | None = None,
) -> tuple[list[Selection], ScanReport]:
    """`mantisd.stats.query.select_periods`, from the cache (from the log, should segments
    keep turning out damaged)."""
    window = dataclasses.replace(
        query,
        last=sys.maxsize,
        since=max(edges[0], query.since) if query.since else edges[0],
        until=min(edges[-1], query.until) if query.until else edges[-1],
    )
    months = shard_months(data_dir, window)
    bounds = np.array([micros(edge) for edge in edges], np.int64)
    for _ in range(_ATTEMPTS):
        with contextlib.suppress(_Retry):
            return _select_periods(
                data_dir, window, months, bounds, on_shard, workers or default_workers()
            )
    selections = [Selection() for _ in edges[1:]]
    report = ScanReport()
    seen: set[int] = set()
    with _gc_paused():
        for index, month in enumerate(months):
            if on_shard:
                on_shard(index, len(months), month)
            shard_report, parts = read_month_periods(data_dir, month, window, bounds)
            report.add(shard_report)
            for selection, part in zip(selections, parts, strict=True):
                _merge(selection, part, seen, window.last)
    report.duplicates += sum(s.report.duplicates for s in selections)
    return selections, report


def _select_periods(
    data_dir: Path,
    window: StatsQuery,
    months: list[str],
    bounds: Array,
    on_shard: OnShard,
    workers: int,
) -> tuple[list[Selection], ScanReport]:
    selections = [Selection() for _ in range(len(bounds) - 1)]
    report = ScanReport()
    if not months:
        return selections, report
    everything = window.last
    with opened_cache(data_dir) as cache, _gc_paused(), _damage_removed():
        if cache is None:
            return selections, report
        loaded = cache.months(months, workers=workers)
        with contextlib.closing(loaded):
            views = []
            for index, month in enumerate(loaded):
                if on_shard:
                    on_shard(index, len(months), month.month)
                views.append(MonthView(month, window))
        if any(v.needs_log(everything) for v in views) or not _no_repeats(
            views, lambda i, a: everything, 0
        ):
            seen: set[int] = set()
            for view in views:
                if view.needs_log(everything):
                    shard_report, parts = read_month_periods(
                        data_dir, view.month.month, window, bounds
                    )
                else:
                    shard_report = view.report(everything)
                    parts = [
                        view.shard_part_of(rows, ScanReport())
                        for rows in _by_period(view, view.rows, bounds)
                    ]
                report.add(shard_report)
                for selection, part in zip(selections, parts, strict=True):
                    _merge(selection, part, seen, everything)
            report.duplicates += sum(s.report.duplicates for s in selections)
            return selections, report
        for view in views:
            report.add(view.report(everything))
            periods = _by_period(view, view.rows, bounds)
            for selection, rows in zip(selections, periods, strict=True):
                if len(rows):
                    selection.run_count += len(rows)
                    add_runs(selection, view.runs(rows))
    return selections, report


def _by_period(view: MonthView, rows: Array, bounds: Array) -> list[Array]:
    """`rows` split by period (`bounds[i] <= finished_at < bounds[i + 1]`), in order."""
    periods = np.searchsorted(bounds, view.at(rows, view.row_finished), side="right") - 1
    return [rows[periods == p] for p in range(len(bounds) - 1)]
