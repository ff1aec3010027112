"""The table and JSON of `mantis runs compare`, in the house layout of `render.py`.

A left-aligned `bucket` column (17 wide, as in `stats`), right-aligned cells, rule lines of `─`
as wide as a row, `total_time_s` after the last rule; seconds as `92.0s`, changes as `+30.2%`,
p-values to three decimals (`<0.001` below that), `-` where there is nothing to show.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from mantisd.schema import TOTAL
from mantisd.stats.comparison import BucketComparison, Side
from mantisd.stats.costs import WALL_TIME, json_round
from mantisd.stats.durations import format_instant, rfc3339
from mantisd.stats.render import MISSING, NAME_WIDTH, RULE
from mantisd.text import printable

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


def cells(
    row: BucketComparison, format_value: Callable[[str, float], str] | None = None
) -> list[str]:
    """The row's cells; `p` is the p-value the verdict used (adjusted when corrected)."""
    base, cur = row.baseline, row.current

    def value(v: float | None) -> str:
        if format_value is None or v is None:
            return seconds(v)
        return format_value(row.bucket, v)

    return [
        str(base.n),
        str(cur.n),
        value(base.p50),
        value(cur.p50),
        change(row.p50_change),
        value(base.p95),
        value(cur.p95),
        change(row.p95_change),
        p_value(row.p_value if row.p_adjusted is None else row.p_adjusted),
    ]


#: How the verdict line names each `--correction`.
CORRECTION_PHRASES = {"holm": "Holm-adjusted", "none": "uncorrected"}


def render_header(
    runs: str,
    baseline: Window,
    current: Window,
    alpha: float,
    effect: float,
    correction: str = "holm",
) -> str:
    """Which runs (`Succeeded runs of X`), which windows with how many runs, and the rule the
    verdicts follow."""
    lines = [f"{runs}:"]
    for name, window in (("baseline", baseline), ("current", current)):
        lines.append(
            f"  {name:<9}{window.run_count:>8} runs  "
            f"{format_instant(window.since)} to {format_instant(window.until)}"
        )
    lines.append(
        f"  {'verdict':<9}regressed/improved when p < {alpha:g} (Mann-Whitney U, "
        f"{CORRECTION_PHRASES[correction]}) and the p50 moved more than {effect * 100:g}%"
    )
    return "\n".join(lines) + "\n"


def render_comparison(
    rows: Sequence[BucketComparison],
    format_value: Callable[[str, float], str] | None = None,
    *,
    counts: bool = True,
) -> str:
    """The comparison table, rule lines included, `total_time_s` after the last rule.

    `format_value(bucket, value)`: cost cells (`$0.012`); default seconds. `counts` False
    leaves out the two `n` columns (grouped blocks give each group's run counts in a title).
    """
    skip = 0 if counts else 2
    columns = COLUMNS[skip:]
    table = [cells(row, format_value)[skip:] for row in rows]
    names = [printable(row.bucket) for row in rows]
    name_width = max([NAME_WIDTH] + [len(name) + 2 for name in names])
    widths = [
        max([width] + [len(line[i]) + 2 for line in table]) for i, (_, width) in enumerate(columns)
    ]
    header = (
        f"{'bucket':<{name_width}}"
        + "".join(f"{title:>{w}}" for (title, _), w in zip(columns, widths, strict=True))
        + f"  {VERDICT}"
    )
    width = name_width + sum(widths) + 2 + max(len(VERDICT), *(len(r.verdict) for r in rows))
    lines = [header, RULE * width]
    for i, (row, name, line) in enumerate(zip(rows, names, table, strict=True)):
        if i == len(rows) - 1 and row.bucket == TOTAL:
            lines.append(RULE * width)
        text = (
            f"{name:<{name_width}}"
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
    correction: str = "holm",
    breakdown: str = WALL_TIME,
) -> str:
    """`{workflow_id, status, alpha, min_effect, correction, baseline: {since, until,
    run_count}, current: {...}, buckets: [{bucket, baseline: {n, p50, p95}, current: {n, p50,
    p95}, p50_change, p95_change, p_value, p_adjusted, verdict}]}`, buckets in the table's
    order; `breakdown` after `workflow_id` when it is not the wall time.

    Seconds and changes are rounded to 6 decimals (costs to 9); p-values are not (they can be
    tiny). `p_adjusted` is null when uncorrected.
    """
    document = comparison_head(
        workflow_id,
        status,
        alpha=alpha,
        min_effect=min_effect,
        correction=correction,
        breakdown=breakdown,
    )
    document["baseline"] = window_document(baseline)
    document["current"] = window_document(current)
    document["buckets"] = buckets_document(rows, breakdown)
    return msgspec.json.encode(document).decode() + "\n"


def comparison_head(
    workflow_id: str,
    status: str | None,
    *,
    alpha: float,
    min_effect: float,
    correction: str,
    breakdown: str,
) -> dict[str, object]:
    """The keys every comparison document starts with."""
    document: dict[str, object] = {"workflow_id": workflow_id}
    if breakdown != WALL_TIME:
        document["breakdown"] = breakdown
    document.update(status=status, alpha=alpha, min_effect=min_effect, correction=correction)
    return document


def window_document(w: Window) -> dict[str, object]:
    return {"since": rfc3339(w.since), "until": rfc3339(w.until), "run_count": w.run_count}


def buckets_document(
    rows: Sequence[BucketComparison], breakdown: str = WALL_TIME
) -> list[dict[str, object]]:
    """One object per compared bucket, in the table's order."""

    def side(s: Side) -> dict[str, object]:
        return {
            "n": s.n,
            "p50": json_round(breakdown, s.p50),
            "p95": json_round(breakdown, s.p95),
        }

    return [
        {
            "bucket": row.bucket,
            "baseline": side(row.baseline),
            "current": side(row.current),
            "p50_change": _round(row.p50_change),
            "p95_change": _round(row.p95_change),
            "p_value": row.p_value,
            "p_adjusted": row.p_adjusted,
            "verdict": row.verdict,
        }
        for row in rows
    ]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
