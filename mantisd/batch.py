"""Validate every complete line of one receive at once: the daemon's fast path to the disk.

`mantisd.schema.validate` costs a few microseconds per row, half of it Python around msgspec:
a `Row.__post_init__`, an encode-and-compare and a clock read per row. What a runtime sends
is almost always a canonical line (`mantis_client` sends `encode_line` output) of the current
month, so `accept_as_sent` (and `Acceptor`, its per-client form) takes a whole receive (its
complete lines, as they came) with a few calls in C and no Python per row:

- one `decode_lines` of the whole buffer into `WireRow`, a struct built from `Row`'s own
  fields and constraints (bounds such as `MAX_SECONDS` included), without its Python hook;
  first into `LeanRow`, the same with the page's nine buckets as a struct (an eighth fewer
  instructions per row), then, if that fails, into `WireRow` itself;
- one `encode_lines` of the decoded rows, compared with the buffer: equal only if every line
  is exactly its row's stored form. An encoding holds no newline, so the first newline of
  both ends the first line and its encoding alike, and so on: a blank line, a line holding
  two values or a value spanning lines (all of which `decode_lines` would take) make them
  differ, as do whitespace, key order, escapes, duplicate or unknown keys and number forms.
  Those bytes are then the batch's payload for the shard, as they came;
- what `Row.__post_init__` checks in Python is checked on the decoded values, a few passes
  in C for the whole batch: both timestamps in UTC (any other offset would be rewritten),
  `finished_at` from 1970 on and at most `MAX_FUTURE` after one `now` per batch, and in the
  month of that `now` (the shard named once per batch). JSON numbers are always finite
  (msgspec refuses out-of-range ones); no line, `\n` included, is longer than
  `MAX_LINE_BYTES`.

Anything else is left to `validate_lines`, which decodes each line on its own (to find the
bad ones) and checks the decoded rows with one encode; a line that cannot be accepted as sent
goes to `validate` on its own, with the same `now`: every accepted line is stored as
`validate` would store it, every refusal is worded by it. A check added to `Row` as a
`msgspec.Meta` constraint applies here by itself; one added to `Row.__post_init__` must be
mirrored here (`tests/test_batch.py` judges every kind of line by `validate` and fails
otherwise).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import operator
import typing
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from mantisd.schema import BUCKETS, EPOCH, MAX_FUTURE, MAX_LINE_BYTES, Row, RowError, validate

#: `Row`'s fields, types and constraints (read from `Row`, so they never drift), no hooks.
#: gc=False: decoded from JSON, a row can hold no reference cycle.
WireRow: Final[Any] = msgspec.defstruct(
    "WireRow",
    [(f.name, f.type) for f in msgspec.structs.fields(Row)],
    kw_only=True,
    forbid_unknown_fields=Row.__struct_config__.forbid_unknown_fields,
    gc=False,
)


def _lean_row() -> Any:
    """`WireRow` with the page's nine buckets, in the page's order, as a struct (`BUCKETS`,
    each optional, no other): the usual `wall_time_breakdown` then decodes without building a
    dict, and encodes back without one. Its values are `Row`'s own bucket type (bounds and
    all). A row with another bucket does not decode into it, and one with the nine in another
    order does not encode back as sent: both are then judged by `WireRow`."""
    fields = {f.name: f.type for f in msgspec.structs.fields(Row)}
    _, seconds = typing.get_args(fields["wall_time_breakdown"])  # dict[str, Seconds]
    buckets = msgspec.defstruct(
        "PageBuckets",
        [(name, seconds | msgspec.UnsetType, msgspec.UNSET) for name in BUCKETS],
        omit_defaults=True,
        forbid_unknown_fields=True,
        gc=False,
    )
    return msgspec.defstruct(
        "LeanRow",
        [*(fields | {"wall_time_breakdown": buckets}).items()],
        kw_only=True,
        forbid_unknown_fields=Row.__struct_config__.forbid_unknown_fields,
        gc=False,
    )


LeanRow: Final[Any] = _lean_row()

logger = logging.getLogger(__name__)

_decoder = msgspec.json.Decoder(WireRow)
_decode = _decoder.decode
_LEAN_DECODE_LINES: Final = msgspec.json.Decoder(LeanRow).decode_lines
_WIRE_DECODE_LINES: Final = _decoder.decode_lines
_encoder = msgspec.json.Encoder()
_encode = _encoder.encode
_encode_lines = _encoder.encode_lines
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeError, RecursionError)
#: The longest line `validate` accepts, without its `\n` (the stored line, `\n` included,
#: holds at most `MAX_LINE_BYTES`).
_LONGEST_BODY: Final = MAX_LINE_BYTES - 1
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


@dataclasses.dataclass(slots=True, frozen=True)
class AsSent:
    """Every line of a receive accepted exactly as sent, all of one month (the usual batch).

    `payload` is the lines as received, each `\\n`-terminated: what goes to the shard."""

    month: str
    payload: bytes
    count: int


class Acceptor:
    """`accept_as_sent` for one client: it tries first the wire struct that took that
    client's last receive (`LeanRow` at first), so that a client whose rows do not fit
    `LeanRow` pays for that once, not on every receive."""

    __slots__ = ("_order",)

    def __init__(self) -> None:
        self._order = (_LEAN_DECODE_LINES, _WIRE_DECODE_LINES)

    def accept(self, received: bytes, *, now: dt.datetime | None = None) -> AsSent | None:
        """See `accept_as_sent`."""
        now = now or dt.datetime.now(_UTC)
        if len(received) > _LONGEST_BODY and has_line_longer(received, _LONGEST_BODY):
            return None
        first, second = self._order
        accepted = _accept(first, received, now)
        if accepted is None:
            accepted = _accept(second, received, now)
            if accepted is not None:
                self._order = (second, first)
        return accepted


def accept_as_sent(received: bytes, *, now: dt.datetime | None = None) -> AsSent | None:
    """`AsSent` when every line of `received` (complete lines, each `\\n`-terminated) is a
    canonical row of `now`'s month in UTC, checked with a few calls in C for the whole
    buffer; None otherwise (`validate_lines` then judges each line).
    """
    return Acceptor().accept(received, now=now)


def _accept(decode_lines: Any, received: bytes, now: dt.datetime) -> AsSent | None:
    try:
        rows = decode_lines(received)
    except _DECODE_ERRORS:
        return None
    if not rows or not _in_month_and_utc(rows, now):
        return None
    try:
        encoded = _encode_lines(rows)
    except (msgspec.EncodeError, RecursionError):
        return None
    if encoded != received:  # see the module's docstring: this is the canonicality proof
        return None
    return AsSent(_month_bounds(now)[2], received, len(rows))


def has_line_longer(received: bytes, limit: int) -> bool:
    """Whether a line of `received` (which ends with `\\n`) is more than `limit` bytes long,
    without a Python step per line: each step jumps to the last newline within `limit + 1`
    bytes of the current line's start (every line it passes is shorter than that window)."""
    start, size = 0, len(received)
    while start < size:
        last = received.rfind(b"\n", start, start + limit + 1)
        if last < 0:
            return True
        start = last + 1
    return False


def _in_month_and_utc(rows: list[Any], now: dt.datetime) -> bool:
    """Every row finished in `now`'s month, at most `MAX_FUTURE` ahead of it, both of its
    timestamps in UTC: a few passes in C."""
    start, end, _ = _month_bounds(now)
    finished = list(map(_finished_at, rows))
    latest = max(finished)
    if not (start <= min(finished) and latest < end and latest <= now + MAX_FUTURE):
        return False
    zones = set(map(_tzinfo, finished))
    zones.update(map(_tzinfo, map(_created_at, rows)))
    return zones == {_UTC}


def validate_lines(bodies: Sequence[bytes], *, now: dt.datetime | None = None) -> Verdicts:
    """Validate request lines (without their `\\n`) as `validate` would, one by one: each
    decoded on its own (a line that is not a row fails alone), one encode for all of them."""
    now = now or dt.datetime.now(_UTC)
    rows = _decode_all(bodies)
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
    if not slow and bodies and months.count(months[0]) == len(months):
        return Verdicts(months, stored, {}, b"\n".join([*bodies, b""]))
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
        except Exception as exc:  # a bug in a check must cost this line, not the connection
            logger.exception("validating a row failed unexpectedly")
            errors[i] = f"row: could not be checked ({type(exc).__name__}: {exc})"
        else:
            months[i] = valid.month
            stored[i] = valid.line[:-1]
    return Verdicts(months, stored, errors)


_finished_at = operator.attrgetter("finished_at")
_created_at = operator.attrgetter("created_at")
_tzinfo = operator.attrgetter("tzinfo")


def _decode_all(bodies: Sequence[bytes]) -> list[Any]:
    """Each line's `WireRow`, or None for a line that is not one (or too long to store)."""
    if max(map(len, bodies), default=0) <= _LONGEST_BODY:
        try:
            return [_decode(body) for body in bodies]
        except _DECODE_ERRORS:
            pass
    return [_decode_or_none(body) for body in bodies]


def _decode_or_none(body: bytes) -> Any:
    if len(body) > _LONGEST_BODY:  # `validate` refuses it, in its own words
        return None
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
