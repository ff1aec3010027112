"""Periods for `mantis runs trend`: UTC days, ISO weeks (Monday first), calendar months.

A period is `start <= finished_at < end`, aligned to the calendar whatever the window: the
window only clips the first and last periods (which are then "partial").
"""

from __future__ import annotations

import datetime as dt
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from mantisd.stats.percentiles import REPORTED, percentiles_of_runs

#: `--every` values, and the column title of the period's label.
EVERY: Final = {"1d": "day", "1w": "week of", "1mo": "month"}
#: How many periods `trend` shows by default (the current, partial one included).
DEFAULT_PERIODS: Final = 12
_TICK = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class Point:
    """One period of the trend: its bounds, how many runs reported the bucket, p50/p95/p99.

    `partial`: the window covers only part of the period (its first or last one).
    """

    start: dt.datetime
    end: dt.datetime
    n: int
    values: tuple[float, ...] | None
    partial: bool


def floor(instant: dt.datetime, every: str) -> dt.datetime:
    """The start of the period holding `instant` (UTC midnight; Monday; the 1st)."""
    day = instant.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if every == "1d":
        return day
    if every == "1w":
        return day - dt.timedelta(days=day.weekday())
    if every == "1mo":
        return day.replace(day=1)
    raise ValueError(f"unknown period {every!r}")


def shift(start: dt.datetime, every: str, periods: int = 1) -> dt.datetime:
    """The start `periods` periods after (or before, when negative) an aligned `start`."""
    if every == "1d":
        return start + dt.timedelta(days=periods)
    if every == "1w":
        return start + dt.timedelta(weeks=periods)
    if every == "1mo":
        months = start.year * 12 + start.month - 1 + periods
        return start.replace(year=months // 12, month=months % 12 + 1)
    raise ValueError(f"unknown period {every!r}")


def default_since(until: dt.datetime, every: str, periods: int = DEFAULT_PERIODS) -> dt.datetime:
    """The start of the window showing `periods` periods, the last one holding `until`'s eve."""
    return shift(floor(until - _TICK, every), every, 1 - periods)


def edges(since: dt.datetime, until: dt.datetime, every: str) -> list[dt.datetime]:
    """Aligned period edges covering `since <= t < until`: first <= since, last >= until."""
    if since >= until:
        raise ValueError("since must be before until")
    result = [floor(since, every)]
    while result[-1] < until:
        result.append(shift(result[-1], every))
    return result


def points(
    sorted_runs: Sequence[Sequence[array[float]]],
    bounds: Sequence[dt.datetime],
    since: dt.datetime,
    until: dt.datetime,
) -> list[Point]:
    """One `Point` per period: `sorted_runs[i]` holds period i's sorted runs of one bucket."""
    result = []
    for i, runs in enumerate(sorted_runs):
        start, end = bounds[i], bounds[i + 1]
        n = sum(map(len, runs))
        result.append(
            Point(
                start=start,
                end=end,
                n=n,
                values=percentiles_of_runs(runs, REPORTED) if n else None,
                partial=start < since or end > until,
            )
        )
    return result
