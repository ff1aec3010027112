"""`--format csv` of `stats`, `compare` and `trend`: one tidy table for a spreadsheet.

One header line, then one line per bucket (per group and bucket with `--by`; per period for
`trend`), with the workflow id on every line so that files of several workflows concatenate.
Numbers are plain (seconds, fractions for changes, dollars for costs) and rounded like the
JSON; an empty cell means null. Text cells that a spreadsheet would run as a formula (starting
with `=`, `+`, `-`, `@`, a tab or a carriage return: a model name, a bucket name, any row
text) get a leading `'`, the usual guard against CSV injection; before that, control and bidi
characters in every text cell are spelled visibly (`mantisd.text.printable`), as on a terminal.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import overload

from mantisd.stats.comparison import BucketComparison
from mantisd.stats.costs import WALL_TIME, json_round
from mantisd.stats.durations import rfc3339
from mantisd.stats.group_stats import EXEMPLAR_PERCENTILES, GroupStats
from mantisd.stats.grouping import GroupKey
from mantisd.stats.percentiles import REPORTED
from mantisd.stats.trend import Point
from mantisd.text import printable

Cell = str | int | float | bool | None
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@overload
def text(value: str) -> str: ...
@overload
def text(value: None) -> None: ...
def text(value: str | None) -> str | None:
    """A text cell (row text, a `--by` name): control and bidi characters spelled visibly, then
    neutralised if a spreadsheet would read it as a formula."""
    if value is None:
        return None
    value = printable(value)
    if value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if c is None else c for c in row] for row in rows)
    return out.getvalue()


def stats_csv(
    workflow_id: str,
    by: Sequence[str],
    groups: Sequence[GroupStats],
    *,
    breakdown: str = WALL_TIME,
    exemplars: bool = False,
) -> str:
    """`workflow_id, <by fields>, run_count, bucket, n, p50, p95, p99[, p95_run_id, p99_run_id]`."""
    header = [
        "workflow_id",
        *map(text, by),
        "run_count",
        "bucket",
        "n",
        *(f"p{p}" for p in REPORTED),
    ]
    if exemplars:
        header += [f"p{p}_run_id" for p in EXEMPLAR_PERCENTILES]
    rows = []
    for g in groups:
        for s in g.stats:
            values = s.values or (None,) * len(REPORTED)
            row: list[Cell] = [text(workflow_id), *_key(g.key), g.run_count, text(s.bucket)]
            row += [g.counts.get(s.bucket, 0), *(_round(breakdown, v) for v in values)]
            if exemplars:
                found = g.exemplars.get(s.bucket, {})
                row += [text(found[p].run_id) if p in found else None for p in EXEMPLAR_PERCENTILES]
            rows.append(row)
    return write_csv(header, rows)


COMPARE_HEADER = (
    "bucket",
    "n_base",
    "n_cur",
    "p50_base",
    "p50_cur",
    "p50_change",
    "p95_base",
    "p95_cur",
    "p95_change",
    "p_value",
    "p_adjusted",
    "verdict",
)


def compare_csv(
    workflow_id: str,
    by: Sequence[str],
    groups: Sequence[tuple[GroupKey, Sequence[BucketComparison]]],
    *,
    breakdown: str = WALL_TIME,
) -> str:
    """`workflow_id, <by fields>, bucket, n_base, n_cur, p50_base, ..., p_adjusted, verdict`."""
    rows = []
    for key, comparisons in groups:
        for c in comparisons:
            b, a = c.baseline, c.current
            rows.append(
                [
                    text(workflow_id),
                    *_key(key),
                    text(c.bucket),
                    b.n,
                    a.n,
                    _round(breakdown, b.p50),
                    _round(breakdown, a.p50),
                    _round(WALL_TIME, c.p50_change),
                    _round(breakdown, b.p95),
                    _round(breakdown, a.p95),
                    _round(WALL_TIME, c.p95_change),
                    c.p_value,
                    c.p_adjusted,
                    c.verdict,
                ]
            )
    return write_csv(["workflow_id", *map(text, by), *COMPARE_HEADER], rows)


def trend_csv(
    workflow_id: str, bucket: str, points: Sequence[Point], *, breakdown: str = WALL_TIME
) -> str:
    """`workflow_id, bucket, start, end, n, p50, p95, p99, partial`, periods oldest first."""
    rows = []
    for p in points:
        values = p.values or (None,) * len(REPORTED)
        rows.append(
            [
                text(workflow_id),
                text(bucket),
                rfc3339(p.start),
                rfc3339(p.end),
                p.n,
                *(_round(breakdown, v) for v in values),
                "true" if p.partial else "false",
            ]
        )
    header = ["workflow_id", "bucket", "start", "end", "n", *(f"p{q}" for q in REPORTED)]
    return write_csv([*header, "partial"], rows)


def _key(key: GroupKey) -> list[Cell]:
    return [text(v) for v in key]


def _round(breakdown: str, value: float | None) -> float | None:
    return json_round(breakdown, value)
