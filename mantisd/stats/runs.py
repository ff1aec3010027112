"""The selected runs themselves, not only their numbers: for `slowest` and `--exemplars`.

`iter_runs` yields the very runs `select` (or `select_groups`) aggregates for the same query,
newest first: the same shards, the same checks, the same dedup (a `run_id` seen in a newer
shard is dropped), the same `last` cap (per group when grouped). It reads one shard after the
other in this process and builds a small object per run, so it costs more per run than
`select`; the commands that need it ask for runs a person will look at.

A `RunView` is also what other sources answer (`RunSource.runs`), so it holds nothing that
depends on how a source stores a run: values in one order (`in_order`), the error in its
canonical form (`mantisd.stats.canonical`: JSONB does not keep an object's key order).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from mantisd.reader import ScanReport
from mantisd.schema import BUCKETS, TOTAL
from mantisd.stats.canonical import canonical_value
from mantisd.stats.costs import COST, numeric_costs
from mantisd.stats.grouping import GroupKey, key_getter
from mantisd.stats.query import StatsQuery, _matching, _scan_shard, shard_months


@dataclass(frozen=True)
class RunView:
    """One selected run: what a person takes to its post-mortem.

    `values`: the breakdown's numbers (wall time: the buckets and `total_time_s`; cost: the
    numeric entries), in `in_order`'s order. `error`: the row's error as decoded JSON (None, a
    string, or an object in canonical form). `ignored`: with cost, the run's non-numeric
    `cost_breakdown` entries.
    """

    run_id: str
    finished_at: dt.datetime
    status: str
    model: str | None
    plan_signature: str | None
    error: Any
    values: dict[str, float]
    key: GroupKey = ()
    ignored: int = 0

    @classmethod
    def of_row(
        cls,
        head: Sequence[Any],
        finished_at: dt.datetime,
        values: dict[str, float],
        breakdown: str,
        key: GroupKey,
        ignored: int,
    ) -> RunView:
        """A run an engine (PostgreSQL, DuckDB) selected: `head` its row's first six columns
        (run_id, finished_at as the engine gives it, status, model, plan_signature, error
        as JSON text), `finished_at` that instant in UTC."""
        run_id, _, status, model, plan_signature, error = head[:6]
        return cls(
            run_id=run_id,
            finished_at=finished_at,
            status=status,
            model=model,
            plan_signature=plan_signature,
            error=None if error is None else error_value(error),
            values=in_order(values, breakdown),
            key=key,
            ignored=ignored,
        )


def iter_runs(
    data_dir: Path,
    query: StatsQuery,
    report: ScanReport,
    *,
    on_shard: Callable[[int, int, str], None] | None = None,
) -> Iterator[RunView]:
    """The query's selected runs, newest first; skipped lines and duplicates go to `report`."""
    months = shard_months(data_dir, query)
    key_of = key_getter(query.by)
    seen: set[int] = set()
    taken: Counter[GroupKey] = Counter()
    for index, month in enumerate(months):
        if on_shard:
            on_shard(index, len(months), month)
        blocks = _scan_shard(data_dir, month, query, report)
        try:
            for rows in blocks:
                chosen = []
                for row in _matching(rows, query):
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
                yield from _views(chosen, query.breakdown)
                if not query.by and taken[()] >= query.last:
                    return
        finally:
            blocks.close()


def _views(chosen: list[tuple[Any, GroupKey]], breakdown: str) -> Iterator[RunView]:
    if breakdown == COST:
        values = numeric_costs([row.cost_breakdown for row, _ in chosen])
    else:
        values = [
            ({**_seconds(row.wall_time_breakdown), TOTAL: row.total_time_s}, 0) for row, _ in chosen
        ]
    for (row, key), (numbers, ignored) in zip(chosen, values, strict=True):
        yield RunView(
            run_id=row.run_id,
            finished_at=row.finished_at,
            status=row.status,
            model=row.model,
            plan_signature=row.plan_signature,
            error=error_value(row.error),
            values=in_order(numbers, breakdown),
            key=key,
            ignored=ignored,
        )


def error_value(raw: bytes | str) -> Any:
    """A row's encoded error, decoded: None, a string, or an object in canonical form."""
    error = msgspec.json.decode(raw)
    if error is None or isinstance(error, str):
        return error
    return canonical_value(raw)


_RANK = {name: (index, "") for index, name in enumerate(BUCKETS)} | {TOTAL: (len(BUCKETS) + 1, "")}


def _position(name: str) -> tuple[int, str]:
    """The nine buckets first (the page's order), then other buckets by name, then the total."""
    return _RANK.get(name) or (len(BUCKETS), name)


def in_order(values: dict[str, float], breakdown: str) -> dict[str, float]:
    """A run's values in the one order every source gives them: the nine buckets in the
    page's order, other buckets by name, `total_time_s` last; cost components by name."""
    if breakdown == COST:
        return dict(sorted(values.items()))
    return {name: values[name] for name in sorted(values, key=_position)}


def _seconds(breakdown: Any) -> dict[str, float]:
    """A decoded breakdown (the nine-bucket struct or a dict) as a dict, reported buckets only."""
    if isinstance(breakdown, dict):
        return {name: value for name, value in breakdown.items() if name != TOTAL}
    return {
        name: value
        for name in breakdown.__struct_fields__
        if (value := getattr(breakdown, name)) is not msgspec.UNSET
    }
