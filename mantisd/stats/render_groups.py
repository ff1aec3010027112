"""`stats --by` and `stats --exemplars`: tables and JSON.

Grouped table: one block per group, busiest first, each block titled `model = X  (37 runs)` over
the page's own table (50 columns for the usual buckets), so a block reads like `stats` for that
group alone and any number of buckets fits in 100 columns. Exemplars: a section after the
table naming, per bucket, the run nearest its p95 and p99, with that run's own value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from mantisd.stats.costs import WALL_TIME, json_round
from mantisd.stats.group_stats import EXEMPLAR_PERCENTILES, GroupStats
from mantisd.stats.grouping import json_key, label
from mantisd.stats.render import NAME_WIDTH, percentiles_document, render_table
from mantisd.text import printable

Formatter = Callable[[str, float], str]


def render_group_tables(
    by: Sequence[str],
    groups: Sequence[GroupStats],
    format_value: Formatter | None = None,
    *,
    exemplars: bool = False,
) -> str:
    """One titled block per group (in the order given), a blank line between blocks."""
    blocks = []
    for g in groups:
        noun = "run" if g.run_count == 1 else "runs"
        title = f"{printable(label(by, g.key))}  ({g.run_count} {noun})\n"
        block = title + render_table(g.stats, format_value)
        if exemplars:
            block += "\n" + render_exemplars(g, format_value)
        blocks.append(block)
    return "\n".join(blocks)


def render_exemplars(group: GroupStats, format_value: Formatter | None = None) -> str:
    """`bucket  p95 run  p99 run`: the run nearest each percentile, and its value."""
    fmt = format_value or (lambda _, v: f"{v:.1f}s")
    rows = []
    for s in group.stats:
        found = group.exemplars.get(s.bucket, {})
        cells = [
            f"{printable(found[p].run_id)} ({fmt(s.bucket, found[p].value)})" if p in found else "-"
            for p in EXEMPLAR_PERCENTILES
        ]
        rows.append((printable(s.bucket), cells))
    name_width = max([NAME_WIDTH] + [len(name) + 2 for name, _ in rows])
    cell_width = max([12] + [len(c) + 3 for _, cells in rows for c in cells])
    header = f"{'nearest run':<{name_width}}" + "".join(
        f"{'p' + str(p):<{cell_width}}" for p in EXEMPLAR_PERCENTILES
    )
    lines = [header.rstrip()]
    for name, cells in rows:
        lines.append(
            (f"{name:<{name_width}}" + "".join(f"{c:<{cell_width}}" for c in cells)).rstrip()
        )
    return "\n".join(lines) + "\n"


def exemplars_document(group: GroupStats) -> dict[str, dict[str, dict[str, object]]]:
    """`{bucket: {p95: {run_id, value}, p99: {...}}}` for the buckets some run reported."""
    return {
        bucket: {f"p{p}": {"run_id": e.run_id, "value": e.value} for p, e in sorted(found.items())}
        for bucket, found in group.exemplars.items()
    }


def render_groups_json(
    workflow_id: str,
    by: Sequence[str],
    groups: Sequence[GroupStats],
    *,
    breakdown: str = WALL_TIME,
    exemplars: bool = False,
    ignored: int | None = None,
) -> str:
    """`{workflow_id, by, groups: [{key, run_count, percentiles}]}`, groups busiest first.

    `key` is the group's value (null for none), a list of values with several `--by`.
    `--breakdown cost` adds `breakdown` after `workflow_id` and `ignored_entries` last;
    `--exemplars` adds `exemplars` to each group.
    """
    document: dict[str, object] = {"workflow_id": workflow_id}
    if breakdown != WALL_TIME:
        document["breakdown"] = breakdown
    document["by"] = list(by)
    entries = []
    for g in groups:
        entry: dict[str, object] = {
            "key": json_key(g.key),
            "run_count": g.run_count,
            "percentiles": percentiles_document(g.stats, breakdown),
        }
        if exemplars:
            entry["exemplars"] = _rounded(exemplars_document(g), breakdown)
        entries.append(entry)
    document["groups"] = entries
    if ignored is not None:
        document["ignored_entries"] = ignored
    return msgspec.json.encode(document).decode() + "\n"


def _rounded(
    document: dict[str, dict[str, dict[str, object]]], breakdown: str
) -> dict[str, dict[str, dict[str, object]]]:
    for found in document.values():
        for exemplar in found.values():
            value = exemplar["value"]
            assert isinstance(value, float)
            exemplar["value"] = json_round(breakdown, value)
    return document
