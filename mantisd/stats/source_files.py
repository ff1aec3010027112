"""Several data dirs (`--data-dir` given more than once) answered as one log.

Pods' data dirs copied to one machine (`--data-dir pods/*`) are merged: a `run_id` found in
several of them counts once, whatever the files are called (shard names collide between
pods: rows are matched by content, never by path). There is no single log order across pods,
so "last N" is the N newest runs by `finished_at`, ties by `run_id` (as from PostgreSQL and
Parquet): months are read newest first, every dir's rows of a month sorted together, until N
runs are held. With one data dir the files source keeps the log's own order.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections import Counter
from collections.abc import Callable, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any

from mantisd.paths import runs_log_dir
from mantisd.reader import CheckedRow, Scanner, ScanReport
from mantisd.stats.fanout import default_workers, fan_out
from mantisd.stats.grouping import GroupKey, key_getter
from mantisd.stats.query import (
    Selection,
    ShardPart,
    StatsQuery,
    _gc_paused,
    _matching,
    _merge,
    _scan_shard,
    collect,
    read_shard_periods,
    shard_months,
)
from mantisd.stats.query_groups import Groups
from mantisd.stats.runs import RunView, _views
from mantisd.stats.source import OnShard
from mantisd.stats.workflows import WorkflowSummary

_newest_first = attrgetter("finished_at", "run_id")


class DataDirs:
    """The runs of several data dirs, one per `run_id`."""

    def __init__(self, roots: Sequence[Path]) -> None:
        if len(roots) < 2:
            raise ValueError("several data dirs: give at least two (one is a FileSource)")
        self.roots = list(dict.fromkeys(roots))

    @property
    def where(self) -> str:
        return ", ".join(str(runs_log_dir(root)) for root in self.roots)

    def _months(self, query: StatsQuery) -> list[str]:
        months = {month for root in self.roots for month in shard_months(root, query)}
        return sorted(months, reverse=True)

    def _month_rows(self, month: str, query: StatsQuery, report: ScanReport) -> list[Any]:
        """Every dir's matching rows of `month`, newest `finished_at` first (ties: `run_id`,
        then the dirs' order)."""
        rows: list[Any] = []
        for root in self.roots:
            part = ScanReport()
            blocks = _scan_shard(root, month, query, part)
            try:
                for block in blocks:
                    rows.extend(_matching(block, query))
            finally:
                blocks.close()
            report.add(part)
        rows.sort(key=_newest_first, reverse=True)  # stable: equal keys keep the dirs' order
        return rows

    def select(
        self, query: StatsQuery, *, on_shard: OnShard = None, percentiles: bool = False
    ) -> Selection:
        if query.by:
            raise ValueError("a grouped query is answered per group: see select_groups")
        months = self._months(query)
        selection = Selection()
        seen: set[int] = set()
        with _gc_paused():
            for index, month in enumerate(months):
                if on_shard:
                    on_shard(index, len(months), month)
                part = ShardPart()
                room = query.last - selection.run_count
                taken = []
                for row in self._month_rows(month, query, part.report):
                    key = hash(row.run_id)
                    if key in seen:  # the same run in another dir (or a newer month)
                        part.report.duplicates += 1
                        continue
                    seen.add(key)
                    taken.append(row)
                    if len(taken) == room:
                        break
                collect(taken, part, query.breakdown)
                part.sort_columns()
                _merge(selection, part, set(), query.last)  # deduplicated above
                if selection.run_count >= query.last:
                    break
        return selection

    def select_many(
        self, queries: Sequence[StatsQuery], *, on_shard: OnShard = None
    ) -> list[Selection]:
        return [self.select(query, on_shard=on_shard) for query in queries]

    def select_periods(
        self,
        query: StatsQuery,
        edges: Sequence[dt.datetime],
        *,
        on_shard: OnShard = None,
    ) -> tuple[list[Selection], ScanReport]:
        """As the files' `select_periods`: every run of the window, each `run_id` once."""
        window = query.over_periods(edges)
        jobs = [(root, month) for month in self._months(window) for root in self.roots]
        selections = [Selection() for _ in edges[1:]]
        report = ScanReport()
        seen: set[int] = set()

        def work(job: tuple[Path, str]) -> tuple[ScanReport, list[ShardPart]]:
            return read_shard_periods(job[0], job[1], query=window, edges=tuple(edges))

        results = fan_out(work, jobs, workers=default_workers())
        with _gc_paused(), contextlib.closing(results):
            for index, ((_, month), (shard_report, parts)) in enumerate(
                zip(jobs, results, strict=True)
            ):
                if on_shard:
                    on_shard(index, len(jobs), month)
                report.add(shard_report)
                for selection, part in zip(selections, parts, strict=True):
                    _merge(selection, part, seen, window.last)
        report.duplicates += sum(s.report.duplicates for s in selections)
        return selections, report

    def select_groups(self, query: StatsQuery, *, on_shard: OnShard = None) -> Groups:
        """The newest `query.last` runs of each group (by `finished_at`, as `select`)."""
        groups = Groups()
        seen: set[int] = set()
        key_of = key_getter(query.by)
        months = self._months(query)
        with _gc_paused():
            for index, month in enumerate(months):
                if on_shard:
                    on_shard(index, len(months), month)
                report = ScanReport()
                chunks: dict[GroupKey, list[Any]] = {}
                for row in self._month_rows(month, query, report):
                    chunks.setdefault(key_of(row), []).append(row)
                groups.report.add(report)
                for key, chunk in chunks.items():
                    part = ShardPart()
                    collect(chunk, part, query.breakdown)
                    part.sort_columns()
                    _merge(groups.selections.setdefault(key, Selection()), part, seen, query.last)
        groups.report.duplicates += sum(s.report.duplicates for s in groups.selections.values())
        groups.selections = {k: s for k, s in groups.selections.items() if s.run_count}
        return groups

    def runs(
        self, query: StatsQuery, report: ScanReport, *, on_shard: OnShard = None
    ) -> list[RunView]:
        """The runs `select` (or `select_groups`) aggregates, newest `finished_at` first."""
        key_of = key_getter(query.by)
        seen: set[int] = set()
        taken: Counter[GroupKey] = Counter()
        chosen: list[tuple[Any, GroupKey]] = []
        months = self._months(query)
        for index, month in enumerate(months):
            if on_shard:
                on_shard(index, len(months), month)
            for row in self._month_rows(month, query, report):
                run = hash(row.run_id)
                if run in seen:
                    report.duplicates += 1
                    continue
                key = key_of(row)
                if taken[key] >= query.last:
                    continue
                seen.add(run)
                taken[key] += 1
                chosen.append((row, key))
            if not query.by and taken[()] >= query.last:
                break
        return list(_views(chosen, query.breakdown))

    def workflows(
        self, report: ScanReport, *, since: dt.datetime | None = None, on_shard: OnShard = None
    ) -> list[WorkflowSummary]:
        """As the files' `summarize`, a `run_id` counted once across the dirs."""
        oldest = None
        if since is not None:
            utc = since.astimezone(dt.UTC)
            oldest = f"{utc.year:04d}-{utc.month:02d}"
        found: dict[str, WorkflowSummary] = {}
        seen: set[int] = set()
        progress = _progress(on_shard, len(self.roots))
        for index, root in enumerate(self.roots):
            blocks = Scanner(CheckedRow).scan_blocks(
                root, report, oldest_month=oldest, on_shard=functools.partial(progress, index)
            )
            try:
                for rows in blocks:
                    for row in rows:
                        if since is not None and row.finished_at < since:
                            continue
                        key = hash(row.run_id)
                        if key in seen:
                            report.duplicates += 1
                            continue
                        seen.add(key)
                        summary = found.get(row.workflow_id)
                        if summary is None:
                            summary = found[row.workflow_id] = WorkflowSummary(row.workflow_id)
                        summary.add(row.status, row.finished_at)
            finally:
                blocks.close()
        return sorted(found.values(), key=lambda s: (-s.run_count, s.workflow_id))


def _progress(on_shard: OnShard, dirs: int) -> Callable[[int, int, int, str], None]:
    """A per-dir `on_shard` that reports the shards of all dirs as one count."""

    def report(dir_index: int, index: int, count: int, month: str) -> None:
        if on_shard:
            on_shard(dir_index * count + index, dirs * count, month)

    return report
