"""One text per JSON value, whoever stored it: a group key or an error prints the same from
the files as from a database.

PostgreSQL's JSONB keeps the value, not its text: an object's keys come back in its own order
(shorter keys first) and a number as the decimal it denotes (`1e16` comes back as
`10000000000000000`, `2.50` stays `2.50`). So what a row's JSON value shows is computed from
the value alone: objects with their keys sorted, and each number by its exact decimal value,
an integer when that value is integral (`1e16`, `100.0`: `10000000000000000`, `100`), else
the nearest float (`2.50`: `2.5`). Every source reads a value through this module, so they
all print it alike (design.md, "Fleet": one answer from every source).
"""

from __future__ import annotations

import sys
from decimal import Decimal
from typing import Any, Final

import msgspec


class _BeyondDouble(ValueError):
    """A number no double holds (`1e5000`): mantis never stores one, a hand-written or
    foreign line may hold one."""


_LARGEST: Final = Decimal(sys.float_info.max)


def _exact_number(text: str) -> int | float:
    """A JSON number with a fraction or an exponent, by its exact value; `_BeyondDouble` past
    a double's range (never spelled out: `1e100000000` would be a hundred million digits)."""
    value = Decimal(text)
    if value.adjusted() > _LARGEST.adjusted() or value.copy_abs() > _LARGEST:  # no context
        raise _BeyondDouble(text)
    if value == value.to_integral_value():
        return int(value)
    return float(text)


_decode = msgspec.json.Decoder(float_hook=_exact_number).decode


def canonical_text(raw: bytes | str) -> str:
    """The canonical compact JSON of an encoded value (the text a group key shows); a value
    holding a number beyond a double's range keeps its text as written, stripped."""
    try:
        return msgspec.json.encode(_decode(raw), order="deterministic").decode()
    except msgspec.ValidationError:  # `_BeyondDouble`, as msgspec reports a hook's error
        return (raw if isinstance(raw, str) else bytes(raw).decode()).strip()


def canonical_value(raw: bytes | str) -> Any:
    """The decoded value of `raw`, objects rebuilt with their keys sorted and numbers by value
    (so that encoding it, or rendering it, gives the canonical text)."""
    text = canonical_text(raw)
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:  # a number beyond a double's range, kept as written
        return text
