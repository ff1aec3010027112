"""The table and JSON of `mantis runs trend`: one line per period, with a bar of its p50.

Bars are drawn in eighths of a character (`▏▎▍▌▋▊▉█`) and scaled from 0 to the largest p50
shown, so a 30% slowdown is a bar 30% longer: a drift shows at a glance. Layout as in
`render.py`: a label column, cells right-aligned (numbers in 10 columns plus `s`), rules of `─`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from mantisd.stats.costs import WALL_TIME, json_round
from mantisd.stats.durations import rfc3339
from mantisd.stats.percentiles import REPORTED
from mantisd.stats.render import MISSING, NUMBER_WIDTH, RULE
from mantisd.stats.trend import EVERY, Point

BAR_WIDTH = 30
EIGHTHS = " ▏▎▍▌▋▊▉"
FULL = "█"
LABEL_WIDTH = 14
COUNT_WIDTH = 9
PARTIAL_MARK = "*"
PARTIAL_NOTE = "* partial period: the window covers only part of it"


def bar(value: float, scale: float, width: int = BAR_WIDTH) -> str:
    """`value` as a bar of eighths, `width` characters standing for `scale`."""
    if scale <= 0 or value <= 0:
        return ""
    eighths = round(min(value / scale, 1.0) * width * 8)
    full, rest = divmod(eighths, 8)
    return FULL * full + (EIGHTHS[rest] if rest else "")


def label(point: Point, every: str) -> str:
    text = point.start.strftime("%Y-%m" if every == "1mo" else "%Y-%m-%d")
    return text + (PARTIAL_MARK if point.partial else "")


def render_trend(
    points: Sequence[Point], every: str, format_value: Callable[[float], str] | None = None
) -> str:
    """The periods, oldest first; a period without runs shows n 0 and `-` cells, no bar.

    `format_value`: cells with their unit (a cost component's); default seconds.
    """
    scale = max((p.values[0] for p in points if p.values), default=0.0)
    number = format_value or (lambda v: f"{v:.1f}")
    cells = [
        [MISSING] * len(REPORTED) if p.values is None else [number(v) for v in p.values]
        for p in points
    ]
    number_width = max([NUMBER_WIDTH] + [len(c) + 2 for row in cells for c in row])
    full = number(scale) + ("" if format_value else "s")
    header = (
        f"{EVERY[every]:<{LABEL_WIDTH}}{'n':>{COUNT_WIDTH}}"
        + "".join(f"{'p' + str(p):>{number_width}} " for p in REPORTED)
        + (f"  p50 bar (full: {full})" if scale else "")
    )
    width = LABEL_WIDTH + COUNT_WIDTH + len(REPORTED) * (number_width + 1) + 2 + BAR_WIDTH
    lines = [header, RULE * width]
    for point, row in zip(points, cells, strict=True):
        unit = "s" if point.values is not None and format_value is None else " "
        text = (
            f"{label(point, every):<{LABEL_WIDTH}}{point.n:>{COUNT_WIDTH}}"
            + "".join(f"{c:>{number_width}}{unit}" for c in row)
            + "  "
            + (bar(point.values[0], scale) if point.values else "")
        )
        lines.append(text.rstrip())
    if any(p.partial for p in points):
        lines += [RULE * width, PARTIAL_NOTE]
    return "\n".join(lines) + "\n"


def render_trend_json(
    workflow_id: str,
    status: str | None,
    bucket: str | None,
    every: str,
    since: object,
    until: object,
    points: Sequence[Point],
    *,
    breakdown: str = WALL_TIME,
) -> str:
    """`{workflow_id, status, bucket, every, since, until, run_count, periods: [{start, end,
    n, p50, p95, p99, partial}]}`, periods oldest first; `run_count` is the sum of their `n`.

    Seconds rounded to the microsecond; null percentiles for a period without runs. Another
    `breakdown` (cost) comes after `workflow_id`, and its values are rounded to 9 decimals.
    """
    head: dict[str, object] = {"workflow_id": workflow_id}
    if breakdown != WALL_TIME:
        head["breakdown"] = breakdown
    document = {
        **head,
        "status": status,
        "bucket": bucket,
        "every": every,
        "since": since,
        "until": until,
        "run_count": sum(p.n for p in points),
        "periods": [
            {
                "start": rfc3339(p.start),
                "end": rfc3339(p.end),
                "n": p.n,
                **{
                    f"p{q}": None if p.values is None else json_round(breakdown, v)
                    for q, v in zip(REPORTED, p.values or (0.0,) * len(REPORTED), strict=True)
                },
                "partial": p.partial,
            }
            for p in points
        ],
    }
    return msgspec.json.encode(document).decode() + "\n"
