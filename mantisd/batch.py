"""Validate every complete line of one receive at once: the daemon's fast path to the disk.

`mantisd.schema.validate` costs a few microseconds per row, half of it Python around msgspec:
a `Row.__post_init__`, an encode-and-compare and a clock read per row. What a runtime sends
is almost always a canonical line (`mantis_client` sends `encode_line` output) of the current
month, so `validate_lines` does, once per batch:

- each line is decoded on its own (a line is exactly one JSON value: nothing spans lines)
  into `WireRow`, a struct built from `Row`'s own fields and constraints, without its Python
  hook;
- one `encode_lines` of all decoded rows, compared with the lines as received, proves that
  every line is exactly its row's stored form (an encoding holds no newline, so the first
  newline of both ends the first line and its encoding alike, and so on); those bytes are
  then the batch's payload for the shard, as they came;
- what `Row.__post_init__` checks in Python is checked on the decoded values, a few passes
  in C for the whole batch: both timestamps in UTC (any other offset would be rewritten),
  `finished_at` from 1970 on and at most `MAX_FUTURE` after one `now` per batch, and in the
  month of that `now` (the shard named once per batch). JSON numbers are always finite
  (msgspec refuses out-of-range ones).

A line this path cannot accept as sent goes to `validate` on its own, with the same `now`:
every accepted line is stored as `validate` would store it, every refusal is worded by it.
A check added to `Row` as a `msgspec.Meta` constraint applies here by itself; one added to
`Row.__post_init__` must be mirrored here (`tests/test_batch.py` judges every kind of line by
`validate` and fails otherwise).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import operator
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from mantisd.schema import EPOCH, MAX_FUTURE, Row, RowError, validate

#: `Row`'s fields, types and constraints (read from `Row`, so they never drift), no hooks.
#: gc=False: decoded from JSON, a row can hold no reference cycle.
WireRow: Final[Any] = msgspec.defstruct(
    "WireRow",
    [(f.name, f.type) for f in msgspec.structs.fields(Row)],
    kw_only=True,
    forbid_unknown_fields=Row.__struct_config__.forbid_unknown_fields,
    gc=False,
)

_decode = msgspec.json.Decoder(WireRow).decode
_encoder = msgspec.json.Encoder()
_encode = _encoder.encode
_encode_lines = _encoder.encode_lines
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeError, RecursionError)
_UTC: Final = dt.UTC


@dataclasses.dataclass(slots=True)
class Verdicts:
    """One verdict per input line, in input order.

    `months[i]` is the shard month of an accepted line (None: refused, see `errors[i]`);
    `stored[i]` its stored form without the `\\n` (the input line itself when it was
    already canonical). `payload`, when every line was accepted as sent and in one month (the
    usual batch), is all of their stored lines, `\\n`-terminated: what goes to the shard.
    """

    months: list[str | None]
    stored: list[bytes]
    errors: dict[int, str]
    payload: bytes | None = None


def validate_lines(
    bodies: Sequence[bytes], *, now: dt.datetime | None = None, received: bytes | None = None
) -> Verdicts:
    """Validate request lines (without their `\\n`) as `validate` would, one by one.

    `received`, if the caller has it, must be the lines as they came, each followed by its
    `\\n` (`b"\\n".join(bodies) + b"\\n"`): it spares building that copy.
    """
    now = now or dt.datetime.now(_UTC)
    rows = _decode_all(bodies)
    if (fast := _as_sent_in_one_month(bodies, rows, now, received)) is not None:
        month, payload = fast
        return Verdicts([month] * len(bodies), list(bodies), {}, payload)
    candidates = [i for i, row in enumerate(rows) if row is not None]
    canonical = _canonical(bodies, rows, candidates)
    months: list[str | None] = [None] * len(bodies)
    start, end, this_month = _month_bounds(now)
    latest = now + MAX_FUTURE
    slow = [i for i, row in enumerate(rows) if row is None]
    for i in candidates:
        row = rows[i]
        finished = row.finished_at
        if not canonical[i] or finished.tzinfo is not _UTC or row.created_at.tzinfo is not _UTC:
            slow.append(i)
        elif start <= finished < end and finished <= latest:
            months[i] = this_month
        elif EPOCH <= finished <= latest:
            months[i] = f"{finished.year:04d}-{finished.month:02d}"
        else:
            slow.append(i)
    del rows  # the decoded objects are large; only the lines are kept
    stored = list(bodies)
    errors: dict[int, str] = {}
    for i in slow:
        try:
            valid = validate(bodies[i], now=now)
        except RowError as exc:
            errors[i] = str(exc)
        except UnicodeError:  # some msgspec releases raise it for invalid UTF-8
            errors[i] = "row: not valid UTF-8"
        except RecursionError:  # a defence: `validate` words this itself
            errors[i] = "row: nested too deeply"
        else:
            months[i] = valid.month
            stored[i] = valid.line[:-1]
    return Verdicts(months, stored, errors)


def _as_sent_in_one_month(
    bodies: Sequence[bytes], rows: list[Any], now: dt.datetime, received: bytes | None
) -> tuple[str, bytes] | None:
    """(month, payload) when every line is a canonical row of `now`'s month in UTC (the usual
    batch), checked with a few passes in C; None otherwise (each line is then looked at)."""
    if not rows or None in rows:
        return None
    start, end, month = _month_bounds(now)
    finished = list(map(_finished_at, rows))
    latest = max(finished)
    if not (start <= min(finished) and latest < end and latest <= now + MAX_FUTURE):
        return None
    zones = set(map(_tzinfo, finished))
    zones.update(map(_tzinfo, map(_created_at, rows)))
    if zones != {_UTC}:
        return None
    try:
        payload = _encode_lines(rows)
    except (msgspec.EncodeError, RecursionError):
        return None
    if received is None:
        received = b"\n".join(bodies) + b"\n"
    return (month, payload) if payload == received else None


_finished_at = operator.attrgetter("finished_at")
_created_at = operator.attrgetter("created_at")
_tzinfo = operator.attrgetter("tzinfo")


def _decode_all(bodies: Sequence[bytes]) -> list[Any]:
    """Each line's `WireRow`, or None for a line that is not one."""
    try:
        return [_decode(body) for body in bodies]
    except _DECODE_ERRORS:
        return [_decode_or_none(body) for body in bodies]


def _decode_or_none(body: bytes) -> Any:
    try:
        return _decode(body)
    except _DECODE_ERRORS:
        return None


def _canonical(bodies: Sequence[bytes], rows: list[Any], candidates: list[int]) -> list[bool]:
    """Whether each decoded line is exactly its row's encoding: one encode for all of them."""
    decoded = [rows[i] for i in candidates]
    lines = [bodies[i] for i in candidates]
    try:
        if _encode_lines(decoded) == b"\n".join(lines) + b"\n":
            return [True] * len(rows)
    except (msgspec.EncodeError, RecursionError):
        pass
    verdict = [False] * len(rows)
    for i in candidates:
        try:
            verdict[i] = _encode(rows[i]) == bodies[i]
        except (msgspec.EncodeError, RecursionError):
            pass
    return verdict


_month_cache: tuple[dt.datetime, dt.datetime, str] | None = None


def _month_bounds(now: dt.datetime) -> tuple[dt.datetime, dt.datetime, str]:
    """[start, end) of `now`'s month in UTC and its shard name (computed once a month)."""
    global _month_cache
    cached = _month_cache
    if cached is not None and cached[0] <= now < cached[1]:
        return cached
    start = now.astimezone(_UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    try:
        end = (start + dt.timedelta(days=32)).replace(day=1)
    except OverflowError:  # December 9999
        end = dt.datetime.max.replace(tzinfo=_UTC)
    _month_cache = cached = (start, end, f"{start.year:04d}-{start.month:02d}")
    return cached
