"""The table and JSON of `mantis runs slowest`.

Each run takes two lines (three with an error), so that the ids a person copies are never cut
and a line stays within 100 columns: rank, value, `run_id`, `finished_at`, model; then, under
the `run_id`, the plan and the run's other largest buckets; then the error, shortened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec

from mantisd.stats.costs import WALL_TIME, json_round
from mantisd.stats.durations import rfc3339
from mantisd.stats.grouping import NONE_LABEL
from mantisd.stats.render import RULE
from mantisd.stats.runs import RunView
from mantisd.stats.slowest import other_top, other_values
from mantisd.text import printable

#: Errors longer than this are cut in the table (the JSON has them whole).
ERROR_WIDTH: Final = 120
RUN_ID_WIDTH: Final = 26
FINISHED_WIDTH: Final = 22


def error_text(error: Any) -> str | None:
    """A run's error as one line of text: the string, or an object's compact JSON."""
    if error is None:
        return None
    text = error if isinstance(error, str) else msgspec.json.encode(error).decode()
    return printable(text)


def render_slowest(
    runs: Sequence[RunView],
    bucket: str,
    format_value: Callable[[str, float], str],
    *,
    rank_others: bool = True,
) -> str:
    """Slowest first, rule under the header. `rank_others` False (cost components, in units
    that do not compare) lists every other value by name instead of the largest ones."""
    values = [format_value(bucket, run.values[bucket]) for run in runs]
    rank_width = len(str(len(runs))) + 1
    value_width = max([len(bucket), *map(len, values)]) + 2
    indent = " " * (rank_width + value_width + 2)
    header = (
        f"{'#':>{rank_width}}{printable(bucket):>{value_width}}  "
        f"{'run_id':<{RUN_ID_WIDTH}}{'finished_at':<{FINISHED_WIDTH}}model"
    )
    lines: list[str] = []
    width = len(header)
    for rank, (run, value) in enumerate(zip(runs, values, strict=True), 1):
        finished = rfc3339(run.finished_at)
        first = (
            f"{rank:>{rank_width}}{value:>{value_width}}  {printable(run.run_id):<{RUN_ID_WIDTH}}"
            f"{finished:<{FINISHED_WIDTH}}{printable(run.model or NONE_LABEL)}".rstrip()
        )
        width = max(width, len(first))
        lines.append(first)
        shown = other_top(run, bucket) if rank_others else other_values(run, bucket)
        others = ", ".join(f"{printable(n)} {format_value(n, v)}" for n, v in shown)
        plan = printable(run.plan_signature or NONE_LABEL)
        label = "top" if rank_others else "others"
        lines.append(f"{indent}plan {plan}" + (f"  {label}: {others}" if others else ""))
        error = error_text(run.error)
        if error is not None:
            if len(error) > ERROR_WIDTH:
                error = error[: ERROR_WIDTH - 1] + "…"
            lines.append(f"{indent}error: {error}")
    return "\n".join([header, RULE * width, *lines]) + "\n"


def render_slowest_json(
    workflow_id: str,
    status: str | None,
    bucket: str,
    run_count: int,
    runs: Sequence[RunView],
    *,
    breakdown: str = WALL_TIME,
) -> str:
    """`{workflow_id, status, bucket, run_count, runs: [{run_id, finished_at, value, status,
    model, plan_signature, error, values}]}`: `run_count` runs were ranked, `values` is each
    run's whole breakdown. Cost adds `breakdown` after `workflow_id`."""
    document: dict[str, object] = {"workflow_id": workflow_id}
    if breakdown != WALL_TIME:
        document["breakdown"] = breakdown
    document.update(
        status=status,
        bucket=bucket,
        run_count=run_count,
        runs=[
            {
                "run_id": run.run_id,
                "finished_at": rfc3339(run.finished_at),
                "value": json_round(breakdown, run.values[bucket]),
                "status": run.status,
                "model": run.model,
                "plan_signature": run.plan_signature,
                "error": run.error,
                "values": {name: json_round(breakdown, v) for name, v in run.values.items()},
            }
            for run in runs
        ],
    )
    return msgspec.json.encode(document).decode() + "\n"
