"""Building a cache segment from the log: lines decoded exactly as the reader decodes them.

A line is a row when `mantisd.stats.query`'s decoders take it (the strict struct with the nine
usual buckets, else the one with any bucket names): the very test the reader applies, so the
cache holds the rows a scan would find, and nothing else. The other lines are kept, when they
could ever mention a workflow (a `"` or a `\\` in them), for each query to count the ones it
would have decoded; lines longer than `MAX_LINE_BYTES` are counted. Blocks of whole lines are
decoded at once when every line is shaped like an object (`_object_lines`: then the block's
values are its lines'), one line at a time in a block holding a bad or oddly shaped line.

Plain shards are read forward from a byte offset (`plain_blocks`); archives through the
reader's own decompression (`archive_blocks`), newest frame first.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np

from mantisd.reader import ScanReport, archive_windows, decode_each
from mantisd.schema import EPOCH, MAX_LINE_BYTES, TOTAL
from mantisd.stats.query import NineBuckets, _AnyRun, _Run
from mantisd.stats.run_keys import run_keys
from mantisd.stats.segment import (
    COLUMNS,
    VERSION,
    Array,
    Header,
    Partition,
    Segment,
    SegmentFile,
    Source,
    checksum,
)

#: Bytes read (and decoded) at once.
BLOCK: Final = 4 << 20
#: The most bytes of unreadable lines a segment keeps; a range with more is not cached.
MAX_BAD_BYTES: Final = 1 << 20
_US: Final = dt.timedelta(microseconds=1)
_NINE: Final = NineBuckets.__struct_fields__
_INDEX: Final = {name: c for c, name in enumerate(COLUMNS) if name != TOTAL}
_getters: Final = [attrgetter(name) for name in _NINE]
_run_id = attrgetter("run_id")
_workflow = attrgetter("workflow_id")
_status = attrgetter("status")
_finished = attrgetter("finished_at")
_total = attrgetter("total_time_s")
_breakdown = attrgetter("wall_time_breakdown")
_UNSET = msgspec.UNSET
NAN: Final = float("nan")
_NEWLINE, _OPEN, _CLOSE = ord("\n"), ord("{"), ord("}")


class BuildFailed(Exception):
    """Raised when a range cannot be cached (it changed while read, a damaged archive, too
    many unreadable lines): the month is then read from the log."""


@dataclass(slots=True)
class _Block:
    """One decoded block of rows, as the columns it adds."""

    keys: Array
    partition: Array
    finished: Array
    values: Array
    extras: list[tuple[int, str, float]]


class SegmentBuilder:
    """Rows in, one `Segment` out: `add` blocks of lines, then `finish`."""

    def __init__(self) -> None:
        self._strict = self._one_strict = msgspec.json.Decoder(_Run)
        self._any = self._one_any = msgspec.json.Decoder(_AnyRun)
        self._blocks: list[_Block] = []
        #: (workflow_id, status) -> partition id, in order of first appearance.
        self._partitions: dict[tuple[str, str], int] = {}
        self.bad: list[bytes] = []
        self._bad_bytes = 0
        self.overlong = 0

    def add(self, chunk: bytes | memoryview) -> None:
        """Lines joined by `\\n` (no final `\\n`: an empty chunk is one empty line): each
        is a row when it decodes alone, as the reader decodes it. All at once when every
        line is shaped like an object (`_object_lines`), else one line at a time."""
        count = _object_lines(chunk)
        for decoder in (self._strict, self._any) if count else ():
            try:
                rows: list[Any] = decoder.decode_lines(chunk)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if len(rows) == count:  # one row per line, each its line's (`_object_lines`)
                self._gather(rows, nine=decoder is self._strict)
                return
        lines = bytes(chunk).split(b"\n")
        rows = decode_each(lines, (self._one_strict, self._one_any), self._keep_bad)
        self._gather(rows, nine=all(type(b) is NineBuckets for b in map(_breakdown, rows)))

    def _keep_bad(self, line: bytes) -> None:
        if b'"' not in line and b"\\" not in line:
            return  # holds no workflow id, however spelled: no query counts it
        self._bad_bytes += len(line)
        if self._bad_bytes > MAX_BAD_BYTES:
            raise BuildFailed("too many unreadable lines to cache")
        self.bad.append(line)

    def _partition_ids(self, pairs: list[tuple[str, str]]) -> Array:
        table = self._partitions
        for pair in dict.fromkeys(pairs):
            table.setdefault(pair, len(table))
        return np.fromiter(map(table.__getitem__, pairs), np.int32, len(pairs))

    def _gather(self, rows: list[Any], *, nine: bool) -> None:
        """Append the rows' columns; `nine`: every breakdown is a `NineBuckets`."""
        count = len(rows)
        values = np.empty((len(COLUMNS), count), np.float64)
        values[-1] = np.fromiter(map(_total, rows), np.float64, count)
        breakdowns = list(map(_breakdown, rows))
        extras: list[tuple[int, str, float]] = []
        if nine:
            for c, getter in enumerate(_getters):
                try:
                    values[c] = np.fromiter(map(getter, breakdowns), np.float64, count)
                except (TypeError, ValueError):  # some rows do not report this bucket
                    column = map(getter, breakdowns)
                    values[c] = [NAN if v is _UNSET else v for v in column]
        else:
            values[:-1] = NAN
            for i, breakdown in enumerate(breakdowns):
                if isinstance(breakdown, NineBuckets):
                    for c, getter in enumerate(_getters):
                        value = getter(breakdown)
                        if value is not _UNSET:
                            values[c, i] = value
                    continue
                for name, value in breakdown.items():
                    known = _INDEX.get(name)
                    if known is not None:
                        values[known, i] = value
                    elif name != TOTAL:
                        extras.append((i, name, value))
        self._blocks.append(
            _Block(
                keys=run_keys(list(map(_run_id, rows))),
                partition=self._partition_ids(
                    list(zip(map(_workflow, rows), map(_status, rows), strict=True))
                ),
                finished=_microseconds(list(map(_finished, rows))),
                values=values,
                extras=extras,
            )
        )

    def add_segment(self, segment: Segment | SegmentFile) -> None:
        """The rows (and unreadable lines) of a segment, as if their lines were added."""
        header = segment.header
        table = self._partitions
        ids = [table.setdefault((p.workflow_id, p.status), len(table)) for p in header.partitions]
        extra_columns = [header.columns[c] for c in segment.array("extra_column").tolist()]
        self._blocks.append(
            _Block(
                keys=segment.array("key"),
                partition=np.array(ids, np.int32)[segment.array("partition")],
                finished=segment.array("finished"),
                values=segment.array("values"),
                extras=list(
                    zip(
                        segment.array("extra_row").tolist(),
                        extra_columns,
                        segment.array("extra_value").tolist(),
                        strict=True,
                    )
                ),
            )
        )
        self.overlong += header.overlong
        for line in segment.bad_lines():
            self._keep_bad(line)

    def finish(self, source: Source, *, newest_first: bool = False) -> Segment:
        """The segment of the rows added (`newest_first`: the blocks came last one first)."""
        blocks = self._blocks[::-1] if newest_first else self._blocks
        rows = sum(len(b.keys) for b in blocks)
        partitions = self._partitions
        partition = np.concatenate([b.partition for b in blocks] or [np.empty(0, np.int32)])
        finished = np.concatenate([b.finished for b in blocks] or [np.empty(0, np.int64)])
        keys = np.concatenate([b.keys for b in blocks] or [np.empty(0, np.int64)])
        values = (
            np.concatenate([b.values for b in blocks], axis=1)
            if blocks
            else np.empty((len(COLUMNS), 0), np.float64)
        )
        columns = list(COLUMNS)
        extra_row, extra_column, extra_value = [], [], []
        base = 0
        extra_index: dict[str, int] = {}
        for block in blocks:
            for i, name, value in block.extras:
                c = extra_index.get(name)
                if c is None:
                    c = extra_index[name] = len(columns)
                    columns.append(name)
                extra_row.append(base + i)
                extra_column.append(c)
                extra_value.append(value)
            base += len(block.keys)
        arrays: dict[str, Array] = {
            "partition": partition,
            "key": keys,
            "finished": finished,
            "values": values,
            "extra_row": np.array(extra_row, np.int64),
            "extra_column": np.array(extra_column, np.int32),
            "extra_value": np.array(extra_value, np.float64),
        }
        order = np.argsort(partition, kind="stable")
        starts = np.searchsorted(partition[order], np.arange(len(partitions) + 1))
        spans = []
        for p in range(len(partitions)):
            mine = finished[order[starts[p] : starts[p + 1]]]
            spans.append((len(mine), int(mine.min()), int(mine.max())))
        arrays.update(_sorted_columns(arrays, order, starts, len(columns)))
        blob = b"".join(self.bad)
        arrays["bad_blob"] = np.frombuffer(blob, np.uint8).copy()
        arrays["bad_end"] = np.cumsum([len(line) for line in self.bad], dtype=np.int64)
        ordered = np.sort(keys)
        unique = not bool((ordered[1:] == ordered[:-1]).any())
        header = Header(
            version=VERSION,
            source=source,
            rows=rows,
            partitions=[
                Partition(workflow, status, count, first, last)
                for (workflow, status), (count, first, last) in zip(partitions, spans, strict=True)
            ],
            columns=columns,
            overlong=self.overlong,
            unique_keys=unique,
        )
        return Segment(header, arrays)


def _object_lines(chunk: bytes | memoryview) -> int | None:
    """How many lines `chunk` holds when every one starts with `{` and ends with `}`, else
    None (at C speed: no loop over lines).

    Then a value cannot run across a line break (a JSON string holds no raw newline, and
    inside a value a `}` is followed by `,`, `}` or `]`, never `{`): every line starts a
    value, and when `decode_lines` finds as many values as lines, each line is one value,
    decoded as it would be alone. Without this shape, a line of two rows beside a blank line
    (or a row spread over two lines) would pass for as many rows as lines."""
    data = np.frombuffer(chunk, np.uint8)
    if not len(data) or data[0] != _OPEN or data[-1] != _CLOSE:
        return None
    breaks = np.flatnonzero(data == _NEWLINE)
    if len(breaks) and not (
        (data[breaks - 1] == _CLOSE).all() and (data[breaks + 1] == _OPEN).all()
    ):
        return None
    return len(breaks) + 1


def _microseconds(instants: list[dt.datetime]) -> Array:
    """Instants as microseconds since 1970, exactly: from `timestamp()` (a double) when every
    one is within 2**31 s of 1970, where that double rounds back to the exact microsecond;
    else by integer arithmetic."""
    seconds = np.fromiter(map(dt.datetime.timestamp, instants), np.float64, len(instants))
    if len(seconds) == 0 or np.abs(seconds).max() < 2.0**31:
        return np.rint(seconds * 1e6).astype(np.int64)
    return np.array([(d - EPOCH) // _US for d in instants], np.int64)


def _sorted_columns(
    arrays: dict[str, Array], order: Array, starts: Array, width: int
) -> dict[str, Array]:
    """Each partition's columns sorted, NaN dropped, partition by partition (`Segment`);
    `order` sorts the rows by partition, partition p's rows are `order[starts[p]:starts[p+1]]`."""
    partitions = len(starts) - 1
    values = arrays["values"]
    extra_partition = arrays["partition"][arrays["extra_row"]]
    runs: list[Array] = []
    bounds = [0]
    sums = []
    for p in range(partitions):
        rows = order[starts[p] : starts[p + 1]]
        first = len(runs)
        for c in range(width):
            if c < len(COLUMNS):
                column = values[c, rows]
            else:
                mine = (arrays["extra_column"] == c) & (extra_partition == p)
                column = arrays["extra_value"][mine]
            column = np.sort(column[~np.isnan(column)])
            runs.append(column)
            bounds.append(bounds[-1] + len(column))
        block = np.concatenate(runs[first:]) if runs[first:] else np.empty(0, np.float64)
        sums.append(checksum(block))
    return {
        "sorted": np.concatenate(runs) if runs else np.empty(0, np.float64),
        "sorted_bounds": np.array(bounds, np.int64),
        "sorted_sums": np.array(sums, np.uint64),
    }


def plain_blocks(
    fd: int, start: int, end: int, builder: SegmentBuilder, *, block: int = BLOCK
) -> None:
    """Add the lines of `[start, end)` of a plain shard to `builder`, in file order.

    `[start, end)` starts at a line's start; it ends after a newline, or at the end of the
    file (its last line may have none: it is still a line, as for the reader). A line longer
    than `MAX_LINE_BYTES` is counted in `builder.overlong` and skipped without being held.
    `BuildFailed` when the file is shorter than `end`.
    """
    pos = start
    while pos < end:
        data = os.pread(fd, min(block, end - pos), pos)
        if not data:
            raise BuildFailed("the shard shrank while it was read")
        if pos + len(data) >= end:  # the range's last lines
            chunk = memoryview(data)[:-1] if data.endswith(b"\n") else memoryview(data)
            builder.add(chunk)
            return
        cut = data.rfind(b"\n")
        if cut < 0:  # a line longer than a block
            pos = _long_line(fd, pos, end, builder)
            continue
        builder.add(memoryview(data)[:cut])
        pos += cut + 1


def _long_line(fd: int, pos: int, end: int, builder: SegmentBuilder) -> int:
    """Add the line starting at `pos` (counted, not held, when longer than the reader reads);
    where the next one starts."""
    after = pos
    while after < end:
        data = os.pread(fd, min(1 << 20, end - after), after)
        if not data:
            raise BuildFailed("the shard shrank while it was read")
        cut = data.find(b"\n")
        if cut >= 0:
            after += cut
            break
        after += len(data)
    if after - pos > MAX_LINE_BYTES:
        builder.overlong += 1
    else:
        builder.add(os.pread(fd, after - pos, pos))
    return after + 1


def archive_blocks(fd: int, path: Path, builder: SegmentBuilder) -> None:
    """Add an archive's lines to `builder`, newest frame first (`finish(newest_first=True)`);
    `BuildFailed` when it is damaged (the reader then reports it)."""
    report = ScanReport()
    windows = archive_windows(fd, path, report, MAX_LINE_BYTES)
    try:
        for buffer, start, end in windows:
            builder.add(memoryview(buffer)[start:end])
    finally:
        windows.close()
    builder.overlong += report.bad_lines
    if report.damaged:
        raise BuildFailed("; ".join(report.damaged))
