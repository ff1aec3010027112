"""Inline SVG charts for the report: a histogram with percentile markers, lines over time.

Plain SVG elements (`rect`, `polyline`, `line`, `text`), sized in a fixed viewBox and scaled
by the page's CSS; every text is escaped here. A histogram switches its x axis to a log scale
when the tail would otherwise squeeze the body of the distribution into a few bins.
"""

from __future__ import annotations

import datetime as dt
import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

from mantisd.stats.percentiles import percentile
from mantisd.text import printable

WIDTH: Final = 400
HEIGHT: Final = 210
LEFT, RIGHT, TOP, BOTTOM = 52, 14, 36, 34
BINS: Final = 40
#: Log x axis when the largest value is this many times the median (or the p99 a third of it).
LOG_MAX_RATIO: Final = 10.0
LOG_P99_RATIO: Final = 3.0
COLORS: Final = {"p50": "#1f6fb4", "p95": "#e07b00", "p99": "#c62828"}
Formatter = Callable[[float], str]


def text(value: str) -> str:
    """Row or user text for an SVG/HTML text node or attribute: control characters escaped,
    then HTML-escaped (quotes included)."""
    return escape(printable(value), quote=True)


@dataclass(frozen=True)
class Axis:
    """Maps values in `[low, high]` to pixels `[start, end]`, linearly or on a log scale."""

    low: float
    high: float
    start: float
    end: float
    log: bool = False

    def __call__(self, value: float) -> float:
        if self.log:
            low, high, value = math.log10(self.low), math.log10(self.high), math.log10(value)
        else:
            low, high = self.low, self.high
        if high == low:
            return (self.start + self.end) / 2
        return self.start + (value - low) / (high - low) * (self.end - self.start)

    def ticks(self, count: int = 5) -> list[float]:
        return (
            log_ticks(self.low, self.high) if self.log else nice_ticks(self.low, self.high, count)
        )


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 times a power of ten) covering `[low, high]`."""
    if high <= low:
        return [low]
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def log_ticks(low: float, high: float) -> list[float]:
    """Powers of ten in `[low, high]`, with 2 and 5 times them when there are few."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    decades = [10.0**e for e in range(first, last + 1)]
    ticks = [d for d in decades if low <= d <= high]
    if len(ticks) < 3:
        ticks = sorted(m * d for d in decades for m in (1, 2, 5) if low <= m * d <= high)
    return ticks


def needs_log(ordered: Sequence[float]) -> bool:
    """A long right tail: the max (or the p99) is far above the median, and every value > 0."""
    if not ordered or ordered[0] <= 0:
        return False
    median = percentile(ordered, 50)
    return (
        ordered[-1] / median >= LOG_MAX_RATIO or percentile(ordered, 99) / median >= LOG_P99_RATIO
    )


def _range(low: float, high: float) -> tuple[float, float]:
    if high > low:
        return low, high
    pad = abs(low) * 0.1 or 1.0
    return low - pad if low - pad >= 0 or low < 0 else 0.0, high + pad


def histogram(
    ordered: Sequence[float],
    markers: Sequence[tuple[str, float]],
    *,
    title: str,
    label: Formatter,
    bucket: str,
) -> str:
    """Counts of `ordered` (sorted values) in `BINS` bins, with a line per (name, value) marker."""
    log = needs_log(ordered)
    low, high = (ordered[0], ordered[-1]) if log else _range(ordered[0], ordered[-1])
    x = Axis(low, high, LEFT, WIDTH - RIGHT, log)
    if log:
        ratio = (high / low) ** (1 / BINS)
        edges = [low * ratio**i for i in range(BINS)] + [high]
    else:
        edges = [low + (high - low) * i / BINS for i in range(BINS + 1)]
    counts = []
    for i in range(BINS):
        upper = bisect_left(ordered, edges[i + 1]) if i < BINS - 1 else len(ordered)
        counts.append(upper - bisect_left(ordered, edges[i]))
    y = Axis(0, max(counts) or 1, HEIGHT - BOTTOM, TOP)
    parts = [_open(title, "histogram", bucket)]
    parts.append('<g class="bars" fill="#9dbfe3">')
    for i, count in enumerate(counts):
        if not count:
            continue
        left, right = x(edges[i]), x(edges[i + 1])
        top = y(count)
        parts.append(
            f'<rect class="bar" x="{left:.1f}" y="{top:.1f}" '
            f'width="{max(right - left - 0.6, 0.6):.1f}" '
            f'height="{HEIGHT - BOTTOM - top:.1f}"><title>{text(label(edges[i]))} to '
            f"{text(label(edges[i + 1]))}: {count} runs</title></rect>"
        )
    parts.append("</g>")
    for row, (name, value) in enumerate(markers):
        px = x(min(max(value, low), high))
        color = COLORS.get(name, "#333")
        right_side = px < WIDTH - RIGHT - 90
        anchor, tx = ("start", px + 3) if right_side else ("end", px - 3)
        parts.append(
            f'<line class="marker" data-p="{text(name)}" x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" '
            f'y2="{HEIGHT - BOTTOM}" stroke="{color}" stroke-width="1.5"/>'
            f'<text x="{tx:.1f}" y="{TOP + 10 + 11 * row}" text-anchor="{anchor}" '
            f'fill="{color}" font-size="10" stroke="#fff" stroke-width="3" paint-order="stroke">'
            f"{text(name)} {text(label(value))}</text>"
        )
    parts.append(_x_axis(x, label, "log scale" if log else ""))
    parts.append(_y_axis(y, lambda v: f"{v:g}", "runs"))
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class Series:
    """One line: its name (p50, ...) and a value per instant (None: no runs, a gap)."""

    name: str
    points: Sequence[tuple[dt.datetime, float | None]]


def lines(
    series: Sequence[Series],
    *,
    span: tuple[dt.datetime, dt.datetime],
    marked: tuple[dt.datetime, dt.datetime] | None,
    title: str,
    label: Formatter,
    bucket: str,
) -> str:
    """Lines over time from `span[0]` to `span[1]`; `marked` (the current window) shaded."""
    values = [v for s in series for _, v in s.points if v is not None]
    top_value = max(values, default=1.0) * 1.05 or 1.0
    y = Axis(0, top_value, HEIGHT - BOTTOM, TOP)
    x = Axis(span[0].timestamp(), span[1].timestamp(), LEFT, WIDTH - RIGHT)
    parts = [_open(title, "trend", bucket)]
    if marked is not None:
        left = x(max(marked[0], span[0]).timestamp())
        right = x(min(marked[1], span[1]).timestamp())
        parts.append(
            f'<rect class="current-window" x="{left:.1f}" y="{TOP}" '
            f'width="{max(right - left, 1):.1f}" '
            f'height="{HEIGHT - BOTTOM - TOP}" fill="#fff1b8"><title>current window</title></rect>'
            f'<text x="{left + 3:.1f}" y="{TOP + 10}" font-size="9" fill="#8a6d00">current</text>'
        )
    for s in series:
        color = COLORS.get(s.name, "#333")
        for run in _segments(s.points):
            coords = " ".join(f"{x(t.timestamp()):.1f},{y(v):.1f}" for t, v in run)
            parts.append(
                f'<polyline class="series" data-series="{text(s.name)}" points="{coords}" '
                f'fill="none" stroke="{color}" stroke-width="1.6"/>'
            )
            if len(run) == 1:
                ((t, v),) = run
                parts.append(
                    f'<circle cx="{x(t.timestamp()):.1f}" cy="{y(v):.1f}" r="2" fill="{color}"/>'
                )
    for i, s in enumerate(series):
        color = COLORS.get(s.name, "#333")
        parts.append(
            f'<text x="{LEFT + 4 + 38 * i}" y="{TOP - 8}" font-size="10" font-weight="600" '
            f'fill="{color}">{text(s.name)}</text>'
        )
    parts.append(_time_axis(x, span))
    parts.append(_y_axis(y, label, ""))
    parts.append("</svg>")
    return "".join(parts)


def _segments(
    points: Sequence[tuple[dt.datetime, float | None]],
) -> list[list[tuple[dt.datetime, float]]]:
    """Runs of consecutive points with a value (a period without runs breaks the line)."""
    runs: list[list[tuple[dt.datetime, float]]] = [[]]
    for t, v in points:
        if v is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((t, v))
    return [run for run in runs if run]


def _open(title: str, kind: str, bucket: str) -> str:
    return (
        f'<svg class="chart {kind}" data-bucket="{text(bucket)}" '
        'xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{text(title)}">'
        f"<title>{text(title)}</title>"
        f'<text class="chart-title" x="{LEFT}" y="14" font-size="12" font-weight="600">'
        f"{text(title)}</text>"
    )


def _x_axis(x: Axis, label: Formatter, note: str) -> str:
    base = HEIGHT - BOTTOM
    parts = [f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base}" y2="{base}" stroke="#555"/>']
    for tick in x.ticks():
        px = x(tick)
        parts.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{base}" y2="{base + 4}" stroke="#555"/>'
            f'<text x="{px:.1f}" y="{base + 15}" font-size="9" text-anchor="middle">'
            f"{text(label(tick))}</text>"
        )
    if note:
        parts.append(
            f'<text class="scale-note" x="{WIDTH - RIGHT}" y="{HEIGHT - 3}" font-size="9" '
            f'text-anchor="end" fill="#666">{text(note)}</text>'
        )
    return "".join(parts)


def _time_axis(x: Axis, span: tuple[dt.datetime, dt.datetime]) -> str:
    base = HEIGHT - BOTTOM
    parts = [f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base}" y2="{base}" stroke="#555"/>']
    seconds = span[1].timestamp() - span[0].timestamp()
    for i in range(5):
        instant = dt.datetime.fromtimestamp(span[0].timestamp() + seconds * i / 4, dt.UTC)
        px = x(instant.timestamp())
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        parts.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{base}" y2="{base + 4}" stroke="#555"/>'
            f'<text x="{px:.1f}" y="{base + 15}" font-size="9" text-anchor="{anchor}">'
            f"{instant:%Y-%m-%d}</text>"
        )
    return "".join(parts)


def _y_axis(y: Axis, label: Formatter, unit: str) -> str:
    parts = [f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="#555"/>']
    for tick in y.ticks(4):
        py = y(tick)
        parts.append(
            f'<line x1="{LEFT - 4}" x2="{WIDTH - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" '
            f'stroke="#e3e3e3"/><text x="{LEFT - 6}" y="{py + 3:.1f}" font-size="9" '
            f'text-anchor="end">{text(label(tick))}</text>'
        )
    if unit:
        parts.append(
            f'<text x="12" y="{(TOP + HEIGHT - BOTTOM) / 2:.0f}" font-size="9" '
            f'transform="rotate(-90 12 {(TOP + HEIGHT - BOTTOM) / 2:.0f})" text-anchor="middle">'
            f"{text(unit)}</text>"
        )
    return "".join(parts)
