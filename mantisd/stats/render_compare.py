"""The table and JSON of `mantis runs compare`, in the house layout of `render.py`.

A left-aligned `bucket` column (17 wide, as in `stats`), right-aligned cells, rule lines of `─`
as wide as a row, `total_time_s` after the last rule; seconds as `92.0s`, changes as `+30.2%`,
p-values to three decimals (`<0.001` below that), `-` where there is nothing to show.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from mantisd.stats.comparison import BucketComparison, Side
from mantisd.stats.durations import format_instant, rfc3339
from mantisd.stats.render import MISSING, NAME_WIDTH, RULE

#: (header, width) of the right-aligned cells after `bucket`; the verdict follows, left-aligned.
COLUMNS = (
    ("n base", 8),
    ("n cur", 7),
    ("p50 base", 10),
    ("p50 cur", 10),
    ("Δp50", 8),
    ("p95 base", 10),
    ("p95 cur", 10),
    ("Δp95", 8),
    ("p", 8),
)
VERDICT = "verdict"


@dataclass(frozen=True)
class Window:
    """One side of the comparison: `since <= finished_at < until`, and how many runs."""

    since: dt.datetime
    until: dt.datetime
    run_count: int


def seconds(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f}s"


def change(value: float | None) -> str:
    return MISSING if value is None else f"{value * 100:+.1f}%"


def p_value(value: float | None) -> str:
    if value is None:
        return MISSING
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def cells(row: BucketComparison) -> list[str]:
    base, cur = row.baseline, row.current
    return [
        str(base.n),
        str(cur.n),
        seconds(base.p50),
        seconds(cur.p50),
        change(row.p50_change),
        seconds(base.p95),
        seconds(cur.p95),
        change(row.p95_change),
        p_value(row.p_value),
    ]


def render_header(runs: str, baseline: Window, current: Window, alpha: float, effect: float) -> str:
    """Which runs (`Succeeded runs of X`), which windows with how many runs, and the rule the
    verdicts follow."""
    lines = [f"{runs}:"]
    for name, window in (("baseline", baseline), ("current", current)):
        lines.append(
            f"  {name:<9}{window.run_count:>8} runs  "
            f"{format_instant(window.since)} to {format_instant(window.until)}"
        )
    lines.append(
        f"  {'verdict':<9}regressed/improved when Mann-Whitney U p < {alpha:g} and the p50 "
        f"moved more than {effect * 100:g}%"
    )
    return "\n".join(lines) + "\n"


def render_comparison(rows: Sequence[BucketComparison]) -> str:
    """The comparison table, rule lines included, `total_time_s` after the last rule."""
    table = [cells(row) for row in rows]
    name_width = max([NAME_WIDTH] + [len(row.bucket) + 2 for row in rows])
    widths = [
        max([width] + [len(line[i]) + 2 for line in table]) for i, (_, width) in enumerate(COLUMNS)
    ]
    header = (
        f"{'bucket':<{name_width}}"
        + "".join(f"{title:>{w}}" for (title, _), w in zip(COLUMNS, widths, strict=True))
        + f"  {VERDICT}"
    )
    width = name_width + sum(widths) + 2 + max(len(VERDICT), *(len(r.verdict) for r in rows))
    lines = [header, RULE * width]
    for i, (row, line) in enumerate(zip(rows, table, strict=True)):
        if i == len(rows) - 1:
            lines.append(RULE * width)
        text = (
            f"{row.bucket:<{name_width}}"
            + "".join(f"{c:>{w}}" for c, w in zip(line, widths, strict=True))
            + f"  {row.verdict}"
        )
        lines.append(text.rstrip())
    return "\n".join(lines) + "\n"


def render_comparison_json(
    workflow_id: str,
    status: str | None,
    baseline: Window,
    current: Window,
    *,
    alpha: float,
    min_effect: float,
    rows: Sequence[BucketComparison],
) -> str:
    """`{workflow_id, status, alpha, min_effect, baseline: {since, until, run_count},
    current: {...}, buckets: [{bucket, baseline: {n, p50, p95}, current: {n, p50, p95},
    p50_change, p95_change, p_value, verdict}]}`, buckets in the table's order.

    Seconds and changes are rounded to 6 decimals; p-values are not (they can be tiny).
    """

    def side(s: Side) -> dict[str, object]:
        return {"n": s.n, "p50": _round(s.p50), "p95": _round(s.p95)}

    def window(w: Window) -> dict[str, object]:
        return {"since": rfc3339(w.since), "until": rfc3339(w.until), "run_count": w.run_count}

    document = {
        "workflow_id": workflow_id,
        "status": status,
        "alpha": alpha,
        "min_effect": min_effect,
        "baseline": window(baseline),
        "current": window(current),
        "buckets": [
            {
                "bucket": row.bucket,
                "baseline": side(row.baseline),
                "current": side(row.current),
                "p50_change": _round(row.p50_change),
                "p95_change": _round(row.p95_change),
                "p_value": row.p_value,
                "verdict": row.verdict,
            }
            for row in rows
        ],
    }
    return msgspec.json.encode(document).decode() + "\n"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
