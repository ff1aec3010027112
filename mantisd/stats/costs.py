"""`--breakdown cost`: the numeric entries of `cost_breakdown`, aggregated like buckets.

`cost_breakdown` has the shape of the runtime's `summary.cost_breakdown`: named numbers. Each
numeric entry (an integer or a finite float; not a boolean) is a component, aggregated over the
runs that report it exactly as a wall-time bucket is. Anything else (a string, null, a nested
object) is ignored and counted, so a change in the runtime's shape shows instead of vanishing.
There is no total: components may be in different units, and a sum would mix them.

Units come from the name, since the row carries none: `..._tokens` / `tokens` is a count,
`..._s` seconds, anything else money (US dollars, the runtime's currency): `$0.012`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec

WALL_TIME: Final = "wall_time"
COST: Final = "cost"
#: `--breakdown` values: which numbers of a row are aggregated.
BREAKDOWNS: Final = (WALL_TIME, COST)


#: Every entry a number a float holds (msgspec refuses booleans, strings, null, objects and
#: integers whose nearest double is infinite, exactly as `_numeric` ignores them).
_all_numbers = msgspec.json.Decoder(list[dict[str, float]]).decode
_numbers = msgspec.json.Decoder(dict[str, float]).decode


def numeric_costs(raws: Sequence[msgspec.Raw | bytes]) -> list[tuple[dict[str, float], int]]:
    """For each raw `cost_breakdown`: its numeric entries, and how many entries were not.

    A value that is not an object at all counts as one ignored entry. The usual batch, every
    entry a number, decodes in one typed call; otherwise each value on its own.
    """
    if not raws:
        return []
    try:
        return [(numbers, 0) for numbers in _all_numbers(b"[" + b",".join(map(bytes, raws)) + b"]")]
    except msgspec.ValidationError:
        pass  # some entry is not a number: look at each breakdown
    found = []
    for raw in raws:
        try:
            found.append((_numbers(raw), 0))
        except msgspec.ValidationError:
            found.append(_numeric(msgspec.json.decode(raw)))
    return found


def _numeric(value: Any) -> tuple[dict[str, float], int]:
    if not isinstance(value, dict):
        return {}, 1
    numbers: dict[str, float] = {}
    ignored = 0
    for name, entry in value.items():
        if type(entry) in (int, float):
            try:
                number = float(entry)
            except OverflowError:  # an integer too large for a float
                ignored += 1
                continue
            if math.isfinite(number):
                numbers[name] = number
                continue
        ignored += 1
    return numbers, ignored


def unit(name: str) -> str:
    """`count`, `seconds` or `usd`: what a component's number means, from its name."""
    if name.endswith("tokens"):
        return "count"
    if name.endswith("_s"):
        return "seconds"
    return "usd"


def format_cost(name: str, value: float) -> str:
    """`$0.012` (at least two significant digits, up to 6 decimals), `45,210` or `12.3s`."""
    kind = unit(name)
    if kind == "count":
        return f"{value:,.0f}" if value == round(value) or abs(value) >= 100 else f"{value:,.1f}"
    if kind == "seconds":
        return f"{value:.1f}s"
    decimals = 3
    while decimals < 6 and 0 < abs(value) < 10 ** (1 - decimals):
        decimals += 1
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.{decimals}f}"


def format_seconds(name: str, value: float) -> str:
    """`92.0s`: a wall-time cell (the name is not needed; same signature as `format_cost`)."""
    return f"{value:.1f}s"


def formatter(breakdown: str) -> Callable[[str, float], str]:
    """The cell formatter of a breakdown: `format_seconds` or `format_cost`."""
    return format_cost if breakdown == COST else format_seconds


def json_round(breakdown: str, value: float | None) -> float | None:
    """Seconds rounded to the microsecond; costs to 9 decimals (a cent's fraction matters)."""
    if value is None:
        return None
    return round(value, 9 if breakdown == COST else 6)
