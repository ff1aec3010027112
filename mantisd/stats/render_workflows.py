"""The table and JSON of `mantis runs list`: one line per workflow, busiest first."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from mantisd.stats.durations import rfc3339
from mantisd.stats.workflows import WorkflowSummary
from mantisd.text import printable

RULE = "─"
HEADERS = ("workflow", "runs", "failed", "last finished")


def render_workflows_table(workflows: Sequence[WorkflowSummary]) -> str:
    """Workflow ids left-aligned, counts right-aligned, the newest `finished_at` to the second
    in UTC; columns as wide as their widest cell, a rule under the header."""
    rows = [
        (
            printable(w.workflow_id),
            str(w.run_count),
            str(w.failed),
            "-" if w.last_finished_at is None else f"{w.last_finished_at:%Y-%m-%d %H:%M:%SZ}",
        )
        for w in workflows
    ]
    widths = [max(len(cells[i]) for cells in [HEADERS, *rows]) for i in range(len(HEADERS))]

    def line(cells: Sequence[str]) -> str:
        name, runs, failed, last = cells
        return (
            f"{name:<{widths[0]}}  {runs:>{widths[1]}}  {failed:>{widths[2]}}  "
            f"{last:<{widths[3]}}".rstrip()
        )

    header = line(HEADERS)
    return "\n".join([header, RULE * len(header), *map(line, rows)]) + "\n"


def render_workflows_json(workflows: Sequence[WorkflowSummary]) -> str:
    """`{"workflows": [{workflow_id, run_count, failed, last_finished_at}]}`, busiest first."""
    return (
        msgspec.json.encode(
            {
                "workflows": [
                    {
                        "workflow_id": w.workflow_id,
                        "run_count": w.run_count,
                        "failed": w.failed,
                        "last_finished_at": None
                        if w.last_finished_at is None
                        else rfc3339(w.last_finished_at),
                    }
                    for w in workflows
                ]
            }
        ).decode()
        + "\n"
    )
