"""`--since` / `--until`: a window edge typed as a duration ago or as a date/time.

One click type for both flags (and for `compare`'s baseline flags): `7d` means now minus seven
days; `2026-10-01` means midnight UTC that day; `2026-10-01T12:00:00+02:00` (RFC 3339) is that
instant. A date-time without a zone is read as UTC, like every timestamp in the log.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import click

_DURATION = re.compile(r"^(\d+)([wdhms])$")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
#: A date, optionally a time (`T` or a space), optionally a zone: RFC 3339 and its naive cousins.
_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}"
    r"(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:[Zz]|[+-]\d{2}:\d{2})?)?$"
)
EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)
#: Dates a window edge may name: no run finished before 1970 (the store refuses it), and
#: period arithmetic (a month past the edge) must stay inside Python's datetime.
FIRST_YEAR, LAST_YEAR = 1970, 9998


@dataclass(frozen=True)
class TimeBound:
    """A window edge as typed (`text`, kept for messages): `ago` before now, or instant `at`."""

    text: str
    ago: dt.timedelta | None = None
    at: dt.datetime | None = None

    @property
    def relative(self) -> bool:
        return self.ago is not None

    def resolve(self, now: dt.datetime) -> dt.datetime:
        """The instant this edge stands for, in UTC, when the command runs at `now`."""
        if self.at is not None:
            return self.at
        assert self.ago is not None
        try:
            return (now - self.ago).astimezone(dt.UTC)
        except OverflowError:  # `100000000d`: before anything was ever logged
            return EARLIEST

    def phrase(self) -> str:
        """`7d ago` or `2026-10-01` (as typed): for headers and messages."""
        return f"{self.text} ago" if self.relative else self.text


def window_phrase(since: TimeBound | None, until: TimeBound | None) -> str:
    """` in the last 7d`, ` since 2026-10-01`, ` before ...`, ` between ... and ...`, or ``."""
    if since is None and until is None:
        return ""
    if until is None:
        assert since is not None
        return f" in the last {since.text}" if since.relative else f" since {since.text}"
    if since is None:
        return f" before {until.phrase()}"
    return f" between {since.phrase()} and {until.phrase()}"


def parse_duration(text: str) -> dt.timedelta | None:
    """`7d` -> 7 days; None when `text` is not a positive duration (or too long for Python)."""
    match = _DURATION.match(text)
    if not match or int(match[1]) == 0:
        return None
    try:
        return dt.timedelta(**{_UNITS[match[2]]: int(match[1])})
    except OverflowError:
        return dt.timedelta.max


def parse_instant(text: str) -> dt.datetime | None:
    """A date (midnight UTC) or an RFC 3339 date-time (naive: UTC), in UTC; None if neither."""
    if not _DATE_TIME.match(text):
        return None
    try:
        instant = dt.datetime.fromisoformat(text.upper().replace(" ", "T"))
    except ValueError:  # 2026-02-30, 25:00, ...
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)
    try:
        return instant.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00: no such instant in UTC
        return None


class TimeBoundType(click.ParamType):  # type: ignore[type-arg]  # generic only from click 8.4
    """A positive duration ago (`7d`, `24h`, `30m`, `2w`, `90s`) or a date/time."""

    name = "duration|date"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> TimeBound:
        if isinstance(value, TimeBound):
            return value
        text = str(value).strip()
        ago = parse_duration(text)
        if ago is not None:
            return TimeBound(text, ago=ago)
        at = parse_instant(text)
        if at is not None and not FIRST_YEAR <= at.year <= LAST_YEAR:
            self.fail(f"{value!r} is outside the years {FIRST_YEAR} to {LAST_YEAR}", param, ctx)
        if at is not None:
            return TimeBound(text, at=at)
        self.fail(
            f"{value!r} is not a duration like 7d, 24h, 30m or 2w (a positive whole number, "
            "then w, d, h, m or s), nor a date like 2026-10-01 or an RFC 3339 date-time like "
            "2026-10-01T12:00:00Z",
            param,
            ctx,
        )


def check_window(
    since: dt.datetime | None,
    until: dt.datetime | None,
    *,
    since_flag: str = "--since",
    until_flag: str = "--until",
) -> None:
    """A usage error when the window `[since, until)` can hold no instant."""
    if since is not None and until is not None and since >= until:
        raise click.UsageError(
            f"empty window: {since_flag} ({format_instant(since)}) is not before "
            f"{until_flag} ({format_instant(until)}); the window is since <= finished_at < until"
        )


def format_instant(instant: dt.datetime) -> str:
    """`2026-10-01` at midnight UTC, `2026-10-01 12:30Z` on a minute, else to the second."""
    instant = instant.astimezone(dt.UTC)
    if instant == EARLIEST:
        return "the beginning"
    if instant.time() == dt.time(0):
        return instant.strftime("%Y-%m-%d")
    if instant.second == 0 and instant.microsecond == 0:
        return instant.strftime("%Y-%m-%d %H:%MZ")
    return instant.strftime("%Y-%m-%d %H:%M:%SZ")


def rfc3339(instant: dt.datetime) -> str:
    """`2026-10-01T00:00:00Z`: the log's own timestamp form, for JSON output."""
    return instant.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
