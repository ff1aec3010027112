"""`compare --by`: which bucket regressed for which group, as blocks and as JSON.

One block per group (busiest first: most runs in both windows), titled with the group and its
run counts, over the usual comparison table without its two `n` columns (92 columns for the
usual buckets); a group absent from one window shows its buckets as `n/a`. The header says
how many tests the correction covered: all buckets of all groups are one family (the question
is "did anything regress anywhere?").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from mantisd.stats.comparison import BucketComparison
from mantisd.stats.costs import WALL_TIME
from mantisd.stats.grouping import GroupKey, json_key, label
from mantisd.stats.render_compare import (
    Window,
    buckets_document,
    comparison_head,
    render_comparison,
    window_document,
)
from mantisd.text import printable


@dataclass(frozen=True)
class GroupComparison:
    """One group's comparison: its key, run counts in each window, and its rows."""

    key: GroupKey
    baseline_runs: int
    current_runs: int
    rows: Sequence[BucketComparison]


def render_group_comparisons(
    by: Sequence[str],
    groups: Sequence[GroupComparison],
    format_value: Callable[[str, float], str] | None = None,
) -> str:
    """A titled comparison table per group, a blank line between them."""
    blocks = []
    for g in groups:
        title = (
            f"{printable(label(by, g.key))}  "
            f"(baseline {g.baseline_runs} runs, current {g.current_runs} runs)\n"
        )
        blocks.append(title + render_comparison(g.rows, format_value, counts=False))
    return "\n".join(blocks)


def render_group_comparisons_json(
    workflow_id: str,
    status: str | None,
    baseline: Window,
    current: Window,
    *,
    by: Sequence[str],
    groups: Sequence[GroupComparison],
    alpha: float,
    min_effect: float,
    correction: str,
    breakdown: str = WALL_TIME,
) -> str:
    """The comparison document with `by` and `groups: [{key, baseline: {run_count},
    current: {run_count}, buckets: [...]}]` in place of `buckets`."""
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
    document["by"] = list(by)
    document["groups"] = [
        {
            "key": json_key(g.key),
            "baseline": {"run_count": g.baseline_runs},
            "current": {"run_count": g.current_runs},
            "buckets": buckets_document(g.rows, breakdown),
        }
        for g in groups
    ]
    return msgspec.json.encode(document).decode() + "\n"
