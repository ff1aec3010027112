"""`mantis runs report`: one self-contained HTML file for a workflow, from the CLI's numbers.

The current and baseline windows are `compare`'s (same flags, same defaults); the page shows
the comparison's verdicts, the current window's percentiles (`stats` over the same runs), each
bucket's distribution and its p50/p95/p99 per period over both windows (`trend`), and the
slowest runs (`slowest`). Written atomically (a temporary file renamed over the target), or to
stdout with `-o -`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mantisd.cli.common import (
    buckets_option,
    data_dir_option,
    db_options,
    open_source,
    parquet_option,
    status_option,
    time_option,
    verdict_options,
)
from mantisd.stats.durations import TimeBound

#: `--every auto`: days up to this many days of history, then weeks up to `WEEKS_UP_TO`.
DAYS_UP_TO = 120
WEEKS_UP_TO = 730


@click.command()
@click.argument("workflow_id")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="The HTML file to write ('-': standard output).",
)
@time_option("--since", "Current window start, inclusive", default="30d")
@time_option("--until", "Current window end, exclusive", shown="now")
@time_option("--baseline-since", "Baseline window start, inclusive", shown="as in compare")
@time_option("--baseline-until", "Baseline window end, exclusive", shown="--since")
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=None,
    help="Newest-first cap on the runs of each window (default: every run of the window).",
)
@buckets_option
@status_option
@click.option(
    "--every",
    type=click.Choice(["auto", "1d", "1w", "1mo"]),
    default="auto",
    show_default=True,
    help=f"Period of the charts over time (auto: days up to {DAYS_UP_TO} days, then weeks, "
    "then months).",
)
@click.option(
    "-n",
    "--count",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="How many slowest runs to list.",
)
@verdict_options
@data_dir_option
@db_options
@parquet_option
def report(
    workflow_id: str,
    output: Path,
    since: TimeBound,
    until: TimeBound | None,
    baseline_since: TimeBound | None,
    baseline_until: TimeBound | None,
    last: int | None,
    buckets: tuple[str, ...],
    status: str,
    every: str,
    count: int,
    alpha: float,
    min_effect: float,
    correction: str,
    data_dir: Path | None,
    db: str | None,
    sources: tuple[str, ...],
    parquet: Path | None,
) -> None:
    """Write one self-contained HTML report of WORKFLOW_ID to OUTPUT.

    Verdicts of the current window against the baseline, percentiles per bucket, each
    bucket's distribution and its percentiles over time (current window marked), and the
    slowest runs. No script and no network: it opens from a file and can be attached to a
    ticket.
    """
    import datetime as dt

    from mantisd.cli.compare import NO_CAP, _baseline_window, _current_window, _span
    from mantisd.cli.report_data import ReportRequest, report_data
    from mantisd.stats.query import StatsQuery
    from mantisd.stats.report.page import render_report

    now = dt.datetime.now(dt.UTC)
    current = _current_window(since, until, now)
    baseline = _baseline_window(baseline_since, baseline_until, current, now)
    if baseline[1] > current[0] and current[1] > baseline[0]:
        raise click.UsageError(
            f"the windows overlap: baseline {_span(baseline)}, current {_span(current)}; a run "
            "must not be in both samples"
        )
    if every == "auto":
        days = (current[1] - baseline[0]).days
        every = "1d" if days <= DAYS_UP_TO else "1w" if days <= WEEKS_UP_TO else "1mo"
    root = open_source(data_dir, db, sources, parquet)
    # Open at the top without --until, as in compare: clocks running ahead count as current.
    current_until = current[1] if until else None
    baseline_query, current_query = (
        StatsQuery(workflow_id, last=last or NO_CAP, status=status or None, since=lo, until=hi)
        for lo, hi in ((baseline[0], baseline[1]), (current[0], current_until))
    )
    request = ReportRequest(
        baseline_query=baseline_query,
        current_query=current_query,
        baseline=baseline,
        current=current,
        buckets=buckets,
        every=every,
        count=count,
        alpha=alpha,
        min_effect=min_effect,
        correction=correction,
        now=now,
        db=db,
        sources=sources,
    )
    write_atomically(output, render_report(report_data(root, request)))
    if str(output) != "-":
        click.echo(f"wrote {output}", err=True)


def write_atomically(target: Path, text: str) -> None:
    """`text` to `target` through a temporary file renamed over it; `-` is standard output."""
    import os
    import tempfile

    if str(target) == "-":
        sys.stdout.write(text)
        return
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as exc:
        raise click.ClickException(f"cannot write the report to {target}: {exc}") from None
