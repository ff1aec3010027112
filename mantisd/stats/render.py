"""The page's table and JSON for `mantis runs stats`.

Table layout, measured off the page's example: a 17-wide left-aligned `bucket` column, then
three cells of a number right-aligned in 10 columns followed by `s` (header labels right-aligned
over the numbers), rule lines of `─` as wide as a row. Columns widen only for names or numbers
that would not fit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec

from mantisd.schema import TOTAL
from mantisd.stats.costs import WALL_TIME, json_round
from mantisd.stats.percentiles import REPORTED
from mantisd.stats.summary import BucketStats
from mantisd.text import printable

NAME_WIDTH = 17
NUMBER_WIDTH = 10
RULE = "─"
MISSING = "-"


def render_table(
    stats: list[BucketStats], format_value: Callable[[str, float], str] | None = None
) -> str:
    """The bucket × percentile table, rule lines included, `total_time_s` after the last rule.

    `format_value(bucket, value)`: cells with their unit (cost components); default seconds.
    """
    if format_value is None:
        cells = [
            [MISSING if s.values is None else f"{v:.1f}" for v in s.values or REPORTED]
            for s in stats
        ]
        unit = ["s" if s.values is not None else " " for s in stats]
        number_width = NUMBER_WIDTH
    else:
        cells = [
            [
                MISSING if s.values is None else format_value(s.bucket, v)
                for v in s.values or REPORTED
            ]
            for s in stats
        ]
        unit = [""] * len(stats)
        number_width = NUMBER_WIDTH + 1
    names = [printable(s.bucket) for s in stats]
    name_width = max([NAME_WIDTH] + [len(name) + 2 for name in names])
    number_width = max([number_width] + [len(c) + 2 for row in cells for c in row])
    width = name_width + len(REPORTED) * (number_width + 1)
    header = f"{'bucket':<{name_width}}" + " ".join(
        f"{'p' + str(p):>{number_width}}" for p in REPORTED
    )
    if format_value is not None:  # no unit column: cells carry their unit
        width = name_width + len(REPORTED) * number_width
        header = f"{'bucket':<{name_width}}" + "".join(
            f"{'p' + str(p):>{number_width}}" for p in REPORTED
        )
    lines = [header, RULE * width]
    for i, (s, name, row) in enumerate(zip(stats, names, cells, strict=True)):
        if i == len(stats) - 1 and s.bucket == TOTAL:
            lines.append(RULE * width)
        line = f"{name:<{name_width}}" + "".join(f"{c:>{number_width}}{unit[i]}" for c in row)
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


def render_json(
    workflow_id: str,
    run_count: int,
    stats: list[BucketStats],
    *,
    breakdown: str = WALL_TIME,
    extra: Mapping[str, object] | None = None,
) -> str:
    """`{workflow_id, run_count, percentiles: {bucket: {p50, p95, p99}}}`, buckets in table order.

    Values are seconds rounded to the microsecond (null for a bucket nobody reported). Another
    breakdown adds `"breakdown"` after `workflow_id`; `extra` keys (exemplars, ...) go last.
    """
    document: dict[str, object] = {"workflow_id": workflow_id}
    if breakdown != WALL_TIME:
        document["breakdown"] = breakdown
    document["run_count"] = run_count
    document["percentiles"] = percentiles_document(stats, breakdown) if run_count else {}
    document.update(extra or {})
    return msgspec.json.encode(document).decode() + "\n"


def percentiles_document(
    stats: list[BucketStats], breakdown: str = WALL_TIME
) -> dict[str, dict[str, float | None]]:
    """`{bucket: {p50, p95, p99}}` in table order, rounded (`mantisd.stats.costs.json_round`)."""
    return {
        s.bucket: {
            f"p{p}": None if s.values is None else json_round(breakdown, v)
            for p, v in zip(REPORTED, s.values or (0.0,) * len(REPORTED), strict=True)
        }
        for s in stats
    }
