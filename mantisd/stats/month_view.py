"""One month's rows for one query, read from the month's cache segments.

Positions count the month's rows newest first (the reader's order). The view decides what
the reader would have kept: the query's workflow and status partitions inside its window, the
newest row of a run_id repeated among the workflow's rows (one repeated with another
workflow's row makes the month `exact`: read from the log), and counts the unreadable lines
the reader's prefilter would have decoded. Whole partitions come as their stored sorted runs;
other rows are gathered and sorted with numpy (`runs`), or handed to `_merge` as a
`ShardPart` (`shard_part_of`).
"""

from __future__ import annotations

import datetime as dt
from array import array
from collections.abc import Iterator
from typing import Any, TypeAlias

import numpy as np

from mantisd.reader import ScanReport, json_needle
from mantisd.schema import EPOCH, TOTAL
from mantisd.stats.cache import Loaded, Month
from mantisd.stats.query import Selection, ShardPart, StatsQuery
from mantisd.stats.segment import COLUMNS, Array

_US = dt.timedelta(microseconds=1)
Runs: TypeAlias = "dict[str, list[array[float]]]"


def micros(instant: dt.datetime) -> int:
    """An instant as microseconds since 1970 (what segments store)."""
    return (instant - EPOCH) // _US


class MonthView:
    """One month's rows for one query. Positions count the month's rows newest first; the
    view keeps only the positions of the matching rows (`rows`), their keys and, with a
    window, their `finished_at`."""

    def __init__(self, month: Month, query: StatsQuery) -> None:
        self.month = month
        self.pieces: list[Loaded] = [s for pieces in month.pieces for s in pieces]
        self.file_of = [i for i, pieces in enumerate(month.pieces) for _ in pieces]
        self.ends = np.cumsum([s.header.rows for s in self.pieces], dtype=np.int64)
        self.exact = month.exact
        self.duplicates = 0
        self.bad_lines = 0
        self.rows = np.empty(0, np.int64)
        self.row_keys = np.empty(0, np.int64)
        self.row_finished = np.empty(0, np.int64)
        if not self.exact:
            self._load(query)

    def _load(self, query: StatsQuery) -> None:
        needle = json_needle(query.workflow_id)
        window = query.since is not None or query.until is not None
        check = len(self.pieces) > 1 or not all(s.header.unique_keys for s in self.pieces)
        ours_rows, matching_rows, keys, finished = [], [], [], []
        for segment in self.pieces:
            header = segment.header
            self.bad_lines += header.overlong + _counted(segment, needle)
            ours = np.array([p.workflow_id == query.workflow_id for p in header.partitions], bool)
            status = [query.status is None or p.status == query.status for p in header.partitions]
            matching = ours & np.array(status, bool)
            if ours.any():
                partition = segment.array("partition")[::-1]
                ours_rows.append(ours[partition])
                matching_rows.append(matching[partition])
            else:
                ours_rows.append(np.zeros(header.rows, bool))
                matching_rows.append(ours_rows[-1])
            wanted = check or matching.any()
            keys.append(segment.array("key")[::-1] if wanted else np.zeros(header.rows, np.int64))
            if window:
                read = matching.any()
                finished.append(segment.array("finished")[::-1] if read else keys[-1])
        chosen = _joined(matching_rows, bool)
        all_keys = _joined(keys, np.int64)
        all_finished = _joined(finished, np.int64)
        if query.since is not None:
            chosen &= all_finished >= micros(query.since)
        if query.until is not None:
            chosen &= all_finished < micros(query.until)
        if check:
            self._drop_duplicates(all_keys, _joined(ours_rows, bool), chosen)
        self.rows = np.flatnonzero(chosen)
        self.row_keys = all_keys[self.rows]
        if window:
            self.row_finished = all_finished[self.rows]

    def _drop_duplicates(self, keys: Array, ours: Array, chosen: Array) -> None:
        """Keep the newest row of each repeated key (all the workflow's rows: `chosen` loses
        the others), or give up (`exact`)."""
        ordered = np.sort(keys)
        repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
        if not len(repeated):
            return
        involved = np.flatnonzero(np.isin(keys, repeated))
        if not ours[involved].all():
            self.exact = True  # another workflow's row: the reader's choice depends on its line
            return
        _, first = np.unique(keys[involved], return_index=True)
        dropped = np.ones(len(involved), bool)
        dropped[first] = False
        self.duplicates = int(dropped.sum())
        chosen[involved[dropped]] = False

    def at(self, positions: Array, values: Array) -> Array:
        """`values` (one per matching row) of the rows at `positions`."""
        return values[np.searchsorted(self.rows, positions)]

    def capped(self, cap: int) -> tuple[Array, bool]:
        """The month's part (the newest `cap` matching rows), and whether the reader would
        stop in this month (it holds `cap` of them)."""
        return self.rows[:cap], len(self.rows) >= cap

    def needs_log(self, cap: int) -> bool:
        """Whether the month must be read from the log for this cap (see the module doc)."""
        _, reached = self.capped(cap)
        return self.exact or (reached and bool(self.bad_lines or self.duplicates))

    def report(self, cap: int) -> ScanReport:
        """What the reader would count reading the month's part."""
        part, reached = self.capped(cap)
        files = len(self.month.files)
        if reached and len(part):
            piece = int(np.searchsorted(self.ends, part[-1], side="right"))
            files = self.file_of[piece] + 1
        return ScanReport(self.bad_lines, self.duplicates, files)

    def _piece_rows(self, positions: Array) -> Iterator[tuple[int, Array]]:
        """Sorted `positions` split by piece, as row indexes within each piece."""
        cuts = np.searchsorted(positions, self.ends).tolist()
        start = 0
        for piece, stop in enumerate(cuts):
            if stop > start:
                yield piece, self.ends[piece] - 1 - positions[start:stop]
            start = stop

    def runs(self, positions: Array) -> Runs:
        """The sorted runs of the rows at `positions`: whole partitions as stored, the
        other rows gathered and sorted."""
        runs: Runs = {}
        loose: dict[str, list[Array]] = {}
        for piece, rows in self._piece_rows(positions):
            segment = self.pieces[piece]
            partition = segment.array("partition")
            taken = np.bincount(partition[rows], minlength=len(segment.header.partitions))
            whole = [p for p, info in enumerate(segment.header.partitions) if taken[p] == info.rows]
            for p in whole:
                for name, run in segment.sorted_runs(p).items():
                    runs.setdefault(name, []).append(run)
            if whole and len(whole) < len(segment.header.partitions):
                is_whole = np.zeros(len(segment.header.partitions), bool)
                is_whole[whole] = True
                rows = rows[~is_whole[partition[rows]]]
            elif whole:
                rows = rows[:0]
            if len(rows):
                for name, column in self._gather(piece, rows).items():
                    loose.setdefault(name, []).append(column)
        for name, columns in loose.items():
            column = np.concatenate(columns)
            column = np.sort(column[~np.isnan(column)])
            if len(column):
                runs.setdefault(name, []).append(as_array(column))
        return runs

    def _gather(self, piece: int, rows: Array) -> dict[str, Array]:
        """The columns of rows of a piece (NaN: not reported), other buckets included."""
        segment = self.pieces[piece]
        columns = dict(zip(COLUMNS, segment.array("values")[:, rows], strict=True))
        extra_row = segment.array("extra_row")
        if len(extra_row):
            index = {row: i for i, row in enumerate(rows.tolist())}
            chosen = np.isin(extra_row, rows)
            names = segment.header.columns
            for row, c, value in zip(
                extra_row[chosen].tolist(),
                segment.array("extra_column")[chosen].tolist(),
                segment.array("extra_value")[chosen].tolist(),
                strict=True,
            ):
                column = columns.get(names[c])
                if column is None:
                    column = columns[names[c]] = np.full(len(rows), np.nan)
                column[index[row]] = value
        return columns

    def shard_part(self, cap: int) -> ShardPart:
        """The month's part as the reader's `ShardPart` (for `_merge`)."""
        part, _ = self.capped(cap)
        return self.shard_part_of(part, self.report(cap))

    def shard_part_of(self, positions: Array, report: ScanReport) -> ShardPart:
        """The rows at `positions` (in order) as a `ShardPart`, columns sorted too."""
        result = ShardPart(report=report)
        result.keys.extend(self.at(positions, self.row_keys).tolist())
        chunks = [(rows, self._gather(piece, rows)) for piece, rows in self._piece_rows(positions)]
        names = dict.fromkeys(name for _, columns in chunks for name in columns)
        for name in names:
            parts = [columns.get(name, np.full(len(rows), np.nan)) for rows, columns in chunks]
            column = np.concatenate(parts) if parts else np.empty(0)
            values = as_array(column)
            if name == TOTAL:
                result.total = values
            else:
                result.columns[name] = values
                if np.isnan(column).any():
                    result.partial.add(name)
            result.sorted_columns[name] = as_array(np.sort(column[~np.isnan(column)]))
        return result


def as_array(column: Array) -> array[float]:
    values = array("d")
    values.frombytes(np.ascontiguousarray(column, np.float64).tobytes())
    return values


def _joined(arrays: list[Array], dtype: Any) -> Array:
    return np.concatenate(arrays) if arrays else np.empty(0, dtype)


def _counted(segment: Loaded, needle: bytes) -> int:
    """The segment's unreadable lines the reader would have decoded for this workflow."""
    if not segment.bad_count():
        return 0
    return sum(1 for line in segment.bad_lines() if needle in line or b"\\" in line)


def add_runs(selection: Selection, runs: Runs) -> None:
    """Append runs to `selection` in the reader's order of names (buckets, others, total)."""
    names: list[str] = [n for n in COLUMNS if n != TOTAL and n in runs]
    names += [n for n in runs if n not in COLUMNS]
    names += [TOTAL] if TOTAL in runs else []
    for name in names:
        for run in runs[name]:
            if run:
                selection.sorted_runs.setdefault(name, []).append(run)
