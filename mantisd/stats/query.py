"""Which rows `mantis runs stats` aggregates, and their seconds per bucket.

"Last N" is the N most recently logged rows that pass the workflow, status and `--since`
filters: the reader's order (newest shard first, later lines first). The scan stops as soon as
it holds N rows, so the default query costs the same however many old months are kept.

Speed: rows are decoded a block at a time into lean structs that hold only what the query
needs; the nine usual buckets decode into a struct (no per-row dict) and are gathered column by
column at C speed. A row with another bucket name falls back to a dict, in a slower loop.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
from array import array
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal

import msgspec

from mantisd.paths import list_shards
from mantisd.reader import KeyedRow, Scanner, ScanReport, json_needle
from mantisd.schema import BUCKETS, TOTAL, Seconds, Timestamp
from mantisd.stats.fanout import default_workers, fan_out

Status = Literal["succeeded", "failed"]
MaybeSeconds = Seconds | None


class NineBuckets(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The page's nine buckets; a missing one is None. Any other bucket name refuses the row."""

    think: MaybeSeconds = None
    claude_extract: MaybeSeconds = None
    settle: MaybeSeconds = None
    claude_ground: MaybeSeconds = None
    perceive: MaybeSeconds = None
    load: MaybeSeconds = None
    act: MaybeSeconds = None
    claude_verify: MaybeSeconds = None
    overhead: MaybeSeconds = None


assert NineBuckets.__struct_fields__ == BUCKETS


class _Run(KeyedRow, gc=False):
    """A run with only the nine usual buckets (no timestamp to parse)."""

    workflow_id: str
    status: Status
    total_time_s: Seconds
    wall_time_breakdown: NineBuckets


class _AnyRun(KeyedRow, gc=False):
    """A run with any bucket names: the fallback when `_Run` refuses a row."""

    workflow_id: str
    status: Status
    total_time_s: Seconds
    wall_time_breakdown: dict[str, Seconds]


class _TimedRun(_Run, gc=False):
    finished_at: Timestamp


class _AnyTimedRun(_AnyRun, gc=False):
    finished_at: Timestamp


@dataclass(frozen=True)
class StatsQuery:
    """What to aggregate: `status` None means every terminal status."""

    workflow_id: str
    last: int = 100
    status: str | None = "succeeded"
    since: dt.datetime | None = None

    def __post_init__(self) -> None:
        if self.last < 1:
            raise ValueError("last must be >= 1")


@dataclass
class Selection:
    """The selected runs' seconds: one array per bucket (`TOTAL` included), in scan order.

    A bucket's array holds only the runs that reported it, so it may be shorter than
    `run_count`.
    """

    run_count: int = 0
    seconds: dict[str, array[float]] = field(default_factory=dict)
    report: ScanReport = field(default_factory=ScanReport)


@dataclass
class ShardPart:
    """One shard's matching runs, newest first, as aligned columns (NaN: not reported).

    `keys` are the runs' `hash(run_id)`, so that runs seen in a newer shard can be dropped.
    """

    keys: array[int] = field(default_factory=lambda: array("q"))
    total: array[float] = field(default_factory=lambda: array("d"))
    columns: dict[str, array[float]] = field(default_factory=dict)
    partial: set[str] = field(default_factory=set)
    report: ScanReport = field(default_factory=ScanReport)


_breakdown = attrgetter("wall_time_breakdown")
_total = attrgetter("total_time_s")
_run_id = attrgetter("run_id")
_bucket_getters = [(name, attrgetter(name)) for name in BUCKETS]
NAN = float("nan")
#: From this `--last` on, every shard goes to the workers at once (see `_parts`).
EAGER_FAN_OUT = 5000


def select(
    data_dir: Path,
    query: StatsQuery,
    *,
    on_shard: Callable[[int, int, str], None] | None = None,
    workers: int | None = None,
) -> Selection:
    """Scan the log newest first and collect the seconds of the query's last N runs.

    The newest shard is read here; when the query needs older ones too, `workers` processes
    (default: one per CPU, at most 4) read them in parallel, merged back in the log's order.
    """
    oldest = None if query.since is None else query.since.astimezone(dt.UTC).strftime("%Y-%m")
    months = [m for m, _ in list_shards(data_dir) if oldest is None or m >= oldest]
    selection = Selection()
    seen: set[int] = set()
    parts = _parts(data_dir, months, query, selection, workers or default_workers())
    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of short-lived acyclic objects: collection passes are pure cost
    try:
        for index, month in enumerate(months):
            if on_shard:
                on_shard(index, len(months), month)
            _merge(selection, next(parts), seen, query.last)
            if selection.run_count >= query.last:
                break
    finally:
        parts.close()
        if gc_was_enabled:
            gc.enable()
    return selection


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


def read_shard(data_dir: Path, month: str, *, query: StatsQuery, cap: int) -> ShardPart:
    """The newest `cap` matching runs of one month shard."""
    since = query.since
    scanner = (
        Scanner(_Run, fallback=_AnyRun)
        if since is None
        else Scanner(_TimedRun, fallback=_AnyTimedRun)
    )
    part = ShardPart()
    blocks = scanner.scan_blocks(
        data_dir,
        part.report,
        prefilter=json_needle(query.workflow_id),
        oldest_month=month,
        newest_month=month,
        shape_check=False,
    )
    try:
        for rows in blocks:
            rows = _matching(rows, query)[: cap - len(part.keys)]
            part.keys.extend(map(hash, map(_run_id, rows)))
            part.total.extend(map(_total, rows))
            _gather(rows, part)
            if len(part.keys) >= cap:
                break
    finally:
        blocks.close()
    return part


def _merge(selection: Selection, part: ShardPart, seen: set[int], last: int) -> None:
    """Append an older shard's runs after the newer ones, up to `last` runs in all."""
    selection.report.bad_lines += part.report.bad_lines
    selection.report.duplicates += part.report.duplicates
    selection.report.shards_read += part.report.shards_read
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
        fresh = set()
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
    named = dict(part.columns)
    named[TOTAL] = part.total
    for name, column in named.items():
        values = column[:taken] if keep is None else array("d", [column[i] for i in keep])
        if name in part.partial:
            values = array("d", [v for v in values if v == v])  # NaN: not reported
        if values:
            selection.seconds.setdefault(name, array("d")).extend(values)


def _matching(rows: list[Any], query: StatsQuery) -> list[Any]:
    """The rows of the query's workflow, status and window (the prefilter only narrows)."""
    workflow_id, status, since = query.workflow_id, query.status, query.since
    if status is None and since is None:
        return [r for r in rows if r.workflow_id == workflow_id]
    if since is None:
        return [r for r in rows if r.workflow_id == workflow_id and r.status == status]
    return [
        r
        for r in rows
        if r.workflow_id == workflow_id
        and (status is None or r.status == status)
        and r.finished_at >= since
    ]


def _gather(rows: list[Any], part: ShardPart) -> None:
    """Append each row's bucket seconds to `part`'s columns, NaN where a row has no value."""
    if not rows:
        return
    before = len(part.keys) - len(rows)
    columns = part.columns
    breakdowns = list(map(_breakdown, rows))
    if {type(b) for b in breakdowns} <= {NineBuckets}:
        for name, getter in _bucket_getters:
            values = list(map(getter, breakdowns))
            try:
                block = array("d", values)
            except TypeError:  # some rows do not report this bucket
                block = array("d", [NAN if v is None else v for v in values])
                part.partial.add(name)
            _column(part, name, before).extend(block)
    else:
        for offset, breakdown in enumerate(breakdowns):
            items: Iterable[tuple[str, float | None]] = (
                breakdown.items()
                if isinstance(breakdown, dict)
                else ((name, getter(breakdown)) for name, getter in _bucket_getters)
            )
            for name, value in items:
                if value is not None and name != TOTAL:
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
