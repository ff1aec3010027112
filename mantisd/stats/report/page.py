"""The report's HTML: sections over data the CLI computed, with inline styles and SVG.

Every string that came from a row (workflow id, bucket names, run ids, models, plans, errors)
goes through `svg.text` (control characters escaped, then HTML-escaped) before it is written.
Numbers carry their exact value in a `data-value` attribute (rounded as `stats --json` rounds
them), so a test, or a person, can check the page against the CLI.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mantisd.schema import TOTAL
from mantisd.stats.comparison import IMPROVED, REGRESSED, BucketComparison
from mantisd.stats.costs import format_seconds, json_round
from mantisd.stats.durations import format_instant, rfc3339
from mantisd.stats.grouping import NONE_LABEL
from mantisd.stats.percentiles import REPORTED
from mantisd.stats.render_compare import CORRECTION_PHRASES, Window, change, p_value
from mantisd.stats.render_slowest import error_text
from mantisd.stats.report import svg
from mantisd.stats.report.svg import text
from mantisd.stats.runs import RunView
from mantisd.stats.slowest import other_top
from mantisd.stats.summary import BucketStats
from mantisd.stats.trend import Point

#: Forbids every fetch and every script: the page is its own content, nothing else runs.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;
margin:0 auto;max-width:1180px;padding:20px 28px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd;
padding-bottom:4px}code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace}
.meta{color:#555;margin:2px 0}.meta b{color:#1d1d1f}
table{border-collapse:collapse;font-size:13px}th,td{padding:3px 9px;text-align:right;
border-bottom:1px solid #eee}th{background:#f5f5f7;font-weight:600}
td.name,th.name{text-align:left}td.num{font-variant-numeric:tabular-nums}
tr.total td{border-top:2px solid #999;font-weight:600}
.verdict-regressed{color:#b71c1c;font-weight:700}.verdict-improved{color:#1b5e20;font-weight:700}
.verdict-na{color:#888}.charts{display:grid;grid-template-columns:1fr 1fr;gap:10px 22px}
svg.chart{width:100%;height:auto;background:#fcfcfd;border:1px solid #eee}
svg.chart text{font-family:system-ui,sans-serif;fill:#333}
.runs td{text-align:left;vertical-align:top}.runs td.num{text-align:right}
.err{color:#b71c1c}.small{font-size:12px;color:#555}
"""


@dataclass
class ReportData:
    """Everything the page shows; each part computed the way its CLI command computes it."""

    workflow_id: str
    status: str | None
    generated_at: dt.datetime
    baseline: Window
    current: Window
    stats: list[BucketStats]
    counts: Mapping[str, int]
    values: Mapping[str, Sequence[float]]
    comparison: Sequence[BucketComparison]
    alpha: float
    min_effect: float
    correction: str
    every: str
    trend: Mapping[str, Sequence[Point]]
    trend_span: tuple[dt.datetime, dt.datetime]
    slowest: Sequence[RunView]
    slowest_bucket: str = TOTAL
    commands: Mapping[str, str] = field(default_factory=dict)


def render_report(data: ReportData) -> str:
    """The whole HTML document."""
    title = f"mantis report: {data.workflow_id}"
    body = [
        _header(data),
        _verdicts(data),
        _percentiles(data),
        _charts(data),
        _slowest(data),
        _footer(data),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{text(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _runs(status: str | None) -> str:
    return f"{status} runs" if status else "runs (every status)"


def _span(window: Window, open_top: bool = False) -> str:
    until = "now" if open_top else format_instant(window.until)
    return f"{format_instant(window.since)} to {until}"


def _header(data: ReportData) -> str:
    return (
        f'<header><h1>Runs of <code id="workflow">{text(data.workflow_id)}</code></h1>'
        f'<p class="meta"><b>{text(_runs(data.status))}</b>; current window '
        f"<b>{text(_span(data.current))}</b> ({data.current.run_count} runs), baseline "
        f"<b>{text(_span(data.baseline))}</b> ({data.baseline.run_count} runs).</p>"
        f'<p class="meta">Generated {text(format_instant(data.generated_at))} by '
        "<code>mantis runs report</code>; every number below is what the CLI prints for the "
        "same runs (see the commands at the end).</p></header>"
    )


def _verdicts(data: ReportData) -> str:
    rule = (
        f"regressed/improved when p &lt; {data.alpha:g} (Mann-Whitney U, "
        f"{CORRECTION_PHRASES[data.correction]}) and the p50 moved more than "
        f"{data.min_effect * 100:g}%"
    )
    regressed = [row.bucket for row in data.comparison if row.verdict == REGRESSED]
    summary = (
        "Regressed: " + ", ".join(f"<b>{text(b)}</b>" for b in regressed)
        if regressed
        else "No bucket regressed."
    )
    head = (
        '<tr><th class="name">bucket</th><th>n base</th><th>n cur</th><th>p50 base</th>'
        "<th>p50 cur</th><th>Δp50</th><th>p95 base</th><th>p95 cur</th><th>Δp95</th>"
        '<th>p</th><th class="name">verdict</th></tr>'
    )
    rows = []
    for row in data.comparison:
        css = {REGRESSED: "verdict-regressed", IMPROVED: "verdict-improved"}.get(
            row.verdict, "verdict-na" if row.verdict == "n/a" else ""
        )
        p = row.p_value if row.p_adjusted is None else row.p_adjusted
        cells = [
            str(row.baseline.n),
            str(row.current.n),
            _seconds(row.baseline.p50),
            _seconds(row.current.p50),
            change(row.p50_change),
            _seconds(row.baseline.p95),
            _seconds(row.current.p95),
            change(row.p95_change),
            p_value(p),
        ]
        rows.append(
            f'<tr class="{"total" if row.bucket == TOTAL else ""}" data-bucket="{text(row.bucket)}"'
            f' data-verdict="{text(row.verdict)}"><td class="name">{text(row.bucket)}</td>'
            + "".join(f'<td class="num">{text(c)}</td>' for c in cells)
            + f'<td class="name {css}">{text(row.verdict)}</td></tr>'
        )
    return (
        '<section id="verdicts"><h2>Which bucket regressed</h2>'
        f'<p class="meta">{summary} <span class="small">({rule})</span></p>'
        f"<table>{head}{''.join(rows)}</table></section>"
    )


def _percentiles(data: ReportData) -> str:
    head = '<tr><th class="name">bucket</th><th>runs</th>' + "".join(
        f"<th>p{p}</th>" for p in REPORTED
    )
    rows = []
    for s in data.stats:
        cells = []
        for p, value in zip(REPORTED, s.values or (None,) * len(REPORTED), strict=True):
            exact = json_round("wall_time", value)
            cells.append(
                f'<td class="num" data-bucket="{text(s.bucket)}" data-p="p{p}" '
                f'data-value="{"null" if exact is None else repr(exact)}">{_seconds(value)}</td>'
            )
        rows.append(
            f'<tr class="{"total" if s.bucket == TOTAL else ""}"><td class="name">'
            f'{text(s.bucket)}</td><td class="num">{data.counts.get(s.bucket, 0)}</td>'
            + "".join(cells)
            + "</tr>"
        )
    return (
        '<section id="percentiles"><h2>p50 / p95 / p99 per bucket, current window</h2>'
        f'<p class="meta">Across the {data.current.run_count} {text(_runs(data.status))} of the '
        "current window; a bucket's percentiles are over the runs that report it.</p>"
        f'<table data-run-count="{data.current.run_count}">{head}</tr>{"".join(rows)}</table>'
        "</section>"
    )


def _charts(data: ReportData) -> str:
    every = {"1d": "day", "1w": "week", "1mo": "month"}[data.every]
    figures = []
    # total first, then the comparison's order: regressions at the top
    compared = [row.bucket for row in data.comparison]
    rest = [s.bucket for s in data.stats if s.bucket not in compared]
    order = list(dict.fromkeys([TOTAL, *compared, *rest]))
    for bucket in order:
        values = data.values.get(bucket)
        if values:
            markers = list(zip(("p50", "p95", "p99"), _stat(data, bucket), strict=False))
            figures.append(
                svg.histogram(
                    values,
                    markers,
                    title=f"{bucket}: distribution, current window",
                    label=_tick,
                    bucket=bucket,
                )
            )
        else:
            figures.append(f'<p class="small">{text(bucket)}: no run reports it.</p>')
        points = data.trend.get(bucket, ())
        series = [
            svg.Series(
                f"p{p}",
                [
                    (pt.start + (pt.end - pt.start) / 2, pt.values[i] if pt.values else None)
                    for pt in points
                ],
            )
            for i, p in enumerate(REPORTED)
        ]
        figures.append(
            svg.lines(
                series,
                span=data.trend_span,
                marked=(data.current.since, data.current.until),
                title=f"{bucket}: p50/p95/p99 per {every}",
                label=_tick,
                bucket=bucket,
            )
        )
    return (
        '<section id="charts"><h2>Distributions and trends per bucket</h2>'
        '<p class="meta">Left: how the current window\'s runs spread (log scale where the tail '
        "needs it), with the p50, p95 and p99. Right: the percentiles per "
        f"{every} over both windows, the current one shaded.</p>"
        f'<div class="charts">{"".join(figures)}</div></section>'
    )


def _stat(data: ReportData, bucket: str) -> tuple[float, ...]:
    for s in data.stats:
        if s.bucket == bucket and s.values is not None:
            return s.values
    return ()


def _slowest(data: ReportData) -> str:
    head = (
        '<tr><th>#</th><th class="name">run_id</th><th class="name">finished_at</th>'
        f"<th>{text(data.slowest_bucket)}</th>"
        '<th class="name">largest other buckets</th><th class="name">model / plan</th>'
        '<th class="name">error</th></tr>'
    )
    rows = []
    for rank, run in enumerate(data.slowest, 1):
        others = ", ".join(
            f"{text(name)} {_seconds(v)}" for name, v in other_top(run, data.slowest_bucket)
        )
        error = error_text(run.error)
        rows.append(
            f'<tr data-run-id="{text(run.run_id)}"><td class="num">{rank}</td>'
            f"<td><code>{text(run.run_id)}</code></td><td>{text(rfc3339(run.finished_at))}</td>"
            f'<td class="num">{_seconds(run.values[data.slowest_bucket])}</td><td>{others}</td>'
            f"<td>{text(run.model or NONE_LABEL)}<br>"
            f'<span class="small">{text(run.plan_signature or NONE_LABEL)}</span></td>'
            f'<td class="err">{text(error or "")}</td></tr>'
        )
    return (
        f'<section id="slowest"><h2>Slowest runs of the current window, by '
        f"{text(data.slowest_bucket)}</h2>"
        '<p class="meta">The run ids to take to a one-run post-mortem (the run\'s '
        "<code>summary.wall_time_breakdown</code>).</p>"
        f'<table class="runs">{head}{"".join(rows)}</table></section>'
    )


def _footer(data: ReportData) -> str:
    commands = "".join(
        f"<li>{text(what)}: <code>{text(command)}</code></li>"
        for what, command in data.commands.items()
    )
    return (
        f'<footer><h2>The same numbers from the CLI</h2><ul class="small">{commands}</ul></footer>'
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else text(format_seconds("", value))


def _tick(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}s"
    return f"{value:.3g}s"
