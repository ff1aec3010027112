"""The numbers of `mantis runs report`, computed by the same calls as the commands that print
them: `compare` (two windows, Holm-corrected verdicts), `stats` (the current window's
percentiles), `trend` (periods over both windows) and `slowest` (the current window's runs).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

import click

from mantisd.cli.analysis import runs_with_progress
from mantisd.cli.common import (
    buckets_to_show,
    check_period_count,
    note_partial_buckets,
    progress,
    readable,
    runs_location,
    runs_of,
    select_many_with_progress,
    warn_skipped,
)
from mantisd.cli.compare import NO_CAP
from mantisd.reader import ScanReport
from mantisd.schema import MAX_FUTURE, TOTAL
from mantisd.stats.comparison import compare_buckets, merged, ordered
from mantisd.stats.durations import format_instant, rfc3339
from mantisd.stats.fanout import default_workers
from mantisd.stats.multiple import correct
from mantisd.stats.query import StatsQuery
from mantisd.stats.render_compare import Window
from mantisd.stats.report.page import ReportData
from mantisd.stats.slowest import slowest
from mantisd.stats.source import LogSource, as_source
from mantisd.stats.summary import bucket_stats
from mantisd.stats.trend import Point, edges, points

Span = tuple[dt.datetime, dt.datetime]
#: More periods than this would make unreadable charts (and a slow scan for nothing).


@dataclass(frozen=True)
class ReportRequest:
    """The two windows' queries and spans, the flags that shape the page, and the database
    read instead of a data dir (`--db`, `--source`), for the page's commands."""

    baseline_query: StatsQuery
    current_query: StatsQuery
    baseline: Span
    current: Span
    buckets: Sequence[str]
    every: str
    count: int
    alpha: float
    min_effect: float
    correction: str
    now: dt.datetime
    db: str | None = None
    sources: Sequence[str] = ()


def report_data(root: LogSource, request: ReportRequest) -> ReportData:
    """Read the log (three passes: windows, periods, current runs) and compute the page."""
    query = request.current_query
    before, after = select_many_with_progress(root, request.baseline_query, query)
    for selection in (before, after):
        warn_skipped(selection.report)
    if not after.run_count:
        raise click.ClickException(
            f"no {runs_of(query.workflow_id, query.status)} in the current window "
            f"({format_instant(request.current[0])} to {format_instant(request.current[1])}) "
            f"in {runs_location(root)}: nothing to report"
        )
    shown = buckets_to_show(request.buckets, before.sorted_runs.keys() | after.sorted_runs.keys())
    note_partial_buckets(after, shown, where=" in the current window")
    stats = bucket_stats(after.sorted_runs, shown)
    rows = compare_buckets(
        before.sorted_runs,
        after.sorted_runs,
        shown,
        alpha=request.alpha,
        min_effect=request.min_effect,
        workers=default_workers(),
    )
    (corrected,) = correct(
        [rows], method=request.correction, alpha=request.alpha, min_effect=request.min_effect
    )
    trend, span = _trend(root, request, [s.bucket for s in stats])
    runs = runs_with_progress(root, query, ScanReport())  # its skips were reported above
    return ReportData(
        workflow_id=query.workflow_id,
        status=query.status,
        generated_at=request.now,
        baseline=Window(*request.baseline, before.run_count),
        current=Window(*request.current, after.run_count),
        stats=stats,
        counts={s.bucket: after.count(s.bucket) for s in stats},
        values={s.bucket: merged(after.sorted_runs.get(s.bucket, [])) for s in stats},
        comparison=ordered(corrected),
        alpha=request.alpha,
        min_effect=request.min_effect,
        correction=request.correction,
        every=request.every,
        trend=trend,
        trend_span=span,
        slowest=slowest(runs, TOTAL, request.count),
        commands=_commands(request, after.run_count),
    )


def _trend(
    root: LogSource, request: ReportRequest, buckets: Sequence[str]
) -> tuple[dict[str, list[Point]], Span]:
    """Each bucket's periods from the baseline's start to the current window's end."""
    low, high = request.baseline[0], request.current[1]
    bounds = edges(low, high, request.every)
    check_period_count(bounds, request.every, low, high)
    query = dataclasses.replace(request.current_query, since=low)
    scan_bounds = bounds
    if request.current_query.until is None:  # open at the top, as the current window is
        scan_bounds = [*bounds[:-1], max(bounds[-1], request.now + MAX_FUTURE)]
    on_shard, done = progress()
    try:
        with readable():
            selections, _ = as_source(root).select_periods(query, scan_bounds, on_shard=on_shard)
    finally:
        done()
    trend = {
        bucket: points([s.sorted_runs.get(bucket, []) for s in selections], bounds, low, high)
        for bucket in buckets
    }
    return trend, (bounds[0], bounds[-1])


def _commands(request: ReportRequest, current_runs: int) -> dict[str, str]:
    """The CLI commands that print the page's numbers (the percentiles exactly: `--last` is
    the current window's run count)."""
    query = request.current_query
    status = [] if query.status == "succeeded" else ["--status", query.status or ""]
    buckets = [word for bucket in request.buckets for word in ("--bucket", bucket)]
    current = ["--since", rfc3339(request.current[0])]
    if query.until is not None:
        current += ["--until", rfc3339(request.current[1])]
    baseline = ["--baseline-since", rfc3339(request.baseline[0])]
    baseline += ["--baseline-until", rfc3339(request.baseline[1])]
    judge = ["--alpha", f"{request.alpha:g}", "--min-effect", f"{request.min_effect * 100:g}%"]
    judge += ["--correction", request.correction]
    last = [] if query.last == NO_CAP else ["--last", str(query.last)]
    whole = ["--since", rfc3339(request.baseline[0]), *current[2:]]
    where = _database_words(request.db, request.sources)

    def line(*words: str) -> str:
        return "mantis runs " + " ".join(map(shlex.quote, [*words, *where]))

    workflow = query.workflow_id
    return {
        "verdicts": line(
            "compare", workflow, *current, *baseline, *last, *status, *buckets, *judge
        ),
        "percentiles": line(
            "stats", workflow, *current, "--last", str(current_runs), *status, *buckets
        ),
        "over time (one bucket per command)": line(
            "trend", workflow, *whole, "--every", request.every, *status, "--bucket", TOTAL
        ),
        "slowest runs": line(
            "slowest",
            workflow,
            *current,
            "--last",
            str(current_runs),
            *status,
            "-n",
            str(request.count),
        ),
    }


def _database_words(db: str | None, sources: Sequence[str]) -> list[str]:
    """`--db URL --source NAME...` when the report read a database (the URL without its
    password: the page is meant to be attached to tickets); nothing for a data dir."""
    if db is None:
        return []
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(db)
    if params.pop("password", None) is not None:
        db = make_conninfo("", **params)
    return ["--db", db, *(word for name in sources for word in ("--source", name))]
