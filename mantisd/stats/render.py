"""The page's table and JSON for `mantis runs stats`.

Table layout, measured off the page's example: a 17-wide left-aligned `bucket` column, then
three cells of a number right-aligned in 10 columns followed by `s` (header labels right-aligned
over the numbers), rule lines of `─` as wide as a row. Columns widen only for names or numbers
that would not fit.
"""

from __future__ import annotations

import msgspec

from mantisd.stats.percentiles import REPORTED
from mantisd.stats.summary import BucketStats

NAME_WIDTH = 17
NUMBER_WIDTH = 10
RULE = "─"
MISSING = "-"


def render_table(stats: list[BucketStats]) -> str:
    """The bucket × percentile table, rule lines included, `total_time_s` after the last rule."""
    cells = [
        [MISSING if s.values is None else f"{v:.1f}" for v in s.values or REPORTED] for s in stats
    ]
    name_width = max([NAME_WIDTH] + [len(s.bucket) + 2 for s in stats])
    number_width = max([NUMBER_WIDTH] + [len(c) + 2 for row in cells for c in row])
    unit = ["s" if s.values is not None else " " for s in stats]
    width = name_width + len(REPORTED) * (number_width + 1)
    header = f"{'bucket':<{name_width}}" + " ".join(
        f"{'p' + str(p):>{number_width}}" for p in REPORTED
    )
    lines = [header, RULE * width]
    for i, (s, row) in enumerate(zip(stats, cells, strict=True)):
        if i == len(stats) - 1:
            lines.append(RULE * width)
        line = f"{s.bucket:<{name_width}}" + "".join(f"{c:>{number_width}}{unit[i]}" for c in row)
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


def render_json(workflow_id: str, run_count: int, stats: list[BucketStats]) -> str:
    """`{workflow_id, run_count, percentiles: {bucket: {p50, p95, p99}}}`, buckets in table order.

    Values are seconds rounded to the microsecond (null for a bucket nobody reported).
    """
    document = {
        "workflow_id": workflow_id,
        "run_count": run_count,
        "percentiles": {
            s.bucket: {
                f"p{p}": None if s.values is None else round(v, 6)
                for p, v in zip(REPORTED, s.values or (0.0,) * len(REPORTED), strict=True)
            }
            for s in stats
            if run_count
        },
    }
    return msgspec.json.encode(document).decode() + "\n"
