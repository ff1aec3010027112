"""`--since 7d|24h|30m`: a click parameter type for a look-back window."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, NamedTuple

import click

_DURATION = re.compile(r"^(\d+)([wdhms])$")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


class Window(NamedTuple):
    """A look-back window as typed (`24h`, kept for messages) and as a `timedelta`."""

    text: str
    delta: dt.timedelta

    def cutoff(self, now: dt.datetime) -> dt.datetime:
        """The oldest `finished_at` inside the window ending at `now`."""
        try:
            return now - self.delta
        except OverflowError:  # `100000000d`: everything is inside
            return dt.datetime.min.replace(tzinfo=dt.UTC)


class Duration(click.ParamType):  # type: ignore[type-arg]  # generic only from click 8.4
    """A positive whole number of weeks, days, hours, minutes or seconds: `7d`, `24h`, `30m`."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Window:
        if isinstance(value, Window):
            return value
        text = str(value).strip()
        match = _DURATION.match(text)
        if not match or int(match[1]) == 0:
            self.fail(
                f"{value!r} is not a duration like 7d, 24h or 30m "
                "(a positive whole number, then w, d, h, m or s)",
                param,
                ctx,
            )
        try:
            return Window(text, dt.timedelta(**{_UNITS[match[2]]: int(match[1])}))
        except OverflowError:
            self.fail(f"{value!r} is too long a duration", param, ctx)
