"""The run row: its msgspec schema, validation and canonical stored form.

Layer 1 (stdlib + msgspec only): the daemon, the client fallback and the readers all share it,
so a row means the same thing on every path to disk.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

import msgspec

from mantisd.buckets import BUCKETS as BUCKETS  # re-exported: rows and readers name them
from mantisd.buckets import TOTAL as TOTAL

#: How far ahead of the receiving host's clock a `finished_at` may be (design.md).
MAX_FUTURE: Final = dt.timedelta(days=1)
#: The longest duration a row may report, about 31.7 years: far beyond any real run, and small
#: enough that sums and differences of a million of them stay exact to the microsecond and
#: never overflow (a value near 1e308 made percentile arithmetic print `inf`). Part of the
#: type, so the daemon's batch path and every reader refuse what `validate` refuses.
MAX_SECONDS: Final = 1e9

#: The longest stored line, `\n` included: 128 times the daemon's default line limit (64 KiB).
#: Readers hold at most this much for one line and skip (and count) longer ones, so one
#: gigabyte of junk without a newline costs a scan about this much, not gigabytes; a longer
#: row is refused here, so that nothing is acknowledged that no reader would read.
MAX_LINE_BYTES: Final = 8 << 20

Seconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]
Count = Annotated[int, msgspec.Meta(ge=0)]
Timestamp = Annotated[dt.datetime, msgspec.Meta(tz=True)]
Name = Annotated[str, msgspec.Meta(min_length=1)]


class RowError(ValueError):
    """Raised when a row is not a valid run row; the message names the offending field."""


class Row(msgspec.Struct, kw_only=True):
    """One terminal run, exactly the page's keys (extra keys travel beside it, see `ValidRow`)."""

    schema_version: Annotated[int, msgspec.Meta(ge=1)]
    run_id: Name
    tenant_id: Name
    profile_id: Name
    workflow_id: Name
    plan_signature: str | None
    model: str | None
    status: Literal["succeeded", "failed"]
    created_at: Timestamp
    finished_at: Timestamp
    total_time_s: Seconds
    wall_time_breakdown: dict[str, Seconds]
    cost_breakdown: dict[str, Any]
    steps_executed: Count
    viable: Count
    error: str | dict[str, Any] | None

    def __post_init__(self) -> None:
        # Stored normalised to UTC with a `Z` (msgspec encodes UTC datetimes that way).
        self.created_at = _utc("created_at", self.created_at)
        self.finished_at = _utc("finished_at", self.finished_at)
        if self.finished_at < EPOCH:  # a zeroed clock; also keeps shard names `YYYY-MM`
            raise ValueError(f"finished_at: {self.finished_at.isoformat()} is before 1970")
        # JSON cannot carry NaN/inf, but Python callers (the client) can hand them in.
        if not math.isfinite(self.total_time_s):
            raise ValueError("total_time_s: must be a finite number")
        for bucket, seconds in self.wall_time_breakdown.items():
            if not math.isfinite(seconds):
                raise ValueError(f"wall_time_breakdown.{bucket}: must be a finite number")


ROW_FIELDS: Final = frozenset(Row.__struct_fields__)
EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _utc(name: str, value: dt.datetime) -> dt.datetime:
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00: no UTC instant to store
        raise ValueError(f"{name}: {value.isoformat()} is out of range in UTC") from None


class ValidRow(msgspec.Struct, frozen=True):
    """A validated row and the exact bytes that get stored for it (one `\\n`-terminated line)."""

    row: Row
    line: bytes

    @property
    def run_id(self) -> str:
        return self.row.run_id

    @property
    def month(self) -> str:
        """`YYYY-MM` of `finished_at` in UTC: the name of the row's shard."""
        finished = self.row.finished_at
        return f"{finished.year:04d}-{finished.month:02d}"


_encoder = msgspec.json.Encoder()
_row_decoder = msgspec.json.Decoder(Row)
_dict_decoder = msgspec.json.Decoder(dict[str, Any])
# Only for an object the strict decoder refused (e.g. `1e999`, out of a double's range): decoded
# to `inf`, the row's own finiteness checks then name the field instead of blaming the line.
_lenient_decoder = msgspec.json.Decoder(dict[str, Any], float_hook=float)

#: Typed mappings of `Row`: their value type finds which entry msgspec's `[...]` refers to.
_ENTRY_TYPES: Final[Mapping[str, Any]] = {"wall_time_breakdown": Seconds}
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]*)`")


def _reason(exc: msgspec.ValidationError, raw: Mapping[str, Any]) -> str:
    """Turn msgspec's `... - at `$.field`` into `field: ...`, naming a bad mapping entry by key.

    msgspec reports a bad dict value as `wall_time_breakdown[...]`; the key is found again in
    `raw` so the message says e.g. `wall_time_breakdown.think: ...`.
    """
    message, sep, where = str(exc).rpartition(" - at `")
    if not sep:
        message, where = where, "$`"
    is_key = where.startswith("key` in `")
    path = where.removeprefix("key` in `").rstrip("`").removeprefix("$").removeprefix(".")
    if missing := _MISSING.fullmatch(message):
        return f"{'.'.join(filter(None, (path, missing['name'])))}: missing required field"
    if not sep:  # raised by `Row.__post_init__`, which names the field itself
        return message
    if is_key:
        return f"{path or 'row'}: bad key: {message}"
    field, bracket, rest = path.partition("[...]")
    entries, entry_type = raw.get(field), _ENTRY_TYPES.get(field)
    if bracket and isinstance(entries, Mapping) and entry_type is not None:
        for key, value in entries.items():
            if not _fits(value, entry_type):
                return f"{field}.{key}{rest}: {_out_of_bounds(value) or message}"
    return f"{path or 'row'}: {_out_of_bounds(raw.get(path)) or message}"


def _out_of_bounds(value: Any) -> str | None:
    """Our own words for a number outside `Seconds`' bounds (NaN fails `ge=0` first in
    msgspec: say what is really wrong), or None to keep msgspec's message."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if value > MAX_SECONDS:
        try:
            shown = f"{value:g}"
        except OverflowError:  # an integer too big for a float (hundreds of digits)
            shown = "a number beyond a double's range"
        return f"{shown} is more than {MAX_SECONDS:g} seconds (about 31 years), the bound"
    return None


def _fits(value: Any, type_: Any) -> bool:
    try:
        msgspec.convert(value, type_)
    except msgspec.ValidationError:
        return False
    return True


def _decode_object(data: bytes | str) -> dict[str, Any]:
    """The JSON object in `data`; `RowError` worded by our own checks, not by the decoder's
    messages (they change between msgspec releases)."""
    try:
        return _dict_decoder.decode(data)
    except msgspec.ValidationError:
        pass  # not an object, or a number out of a double's range: the lenient decoder tells
    except (msgspec.DecodeError, UnicodeError) as exc:
        raise _not_json(data, exc) from None
    try:
        return _lenient_decoder.decode(data)
    except msgspec.ValidationError:
        raise RowError("row: expected a JSON object") from None
    except (msgspec.DecodeError, UnicodeError) as exc:  # e.g. `{"a": 1e999 x}`
        raise _not_json(data, exc) from None


def _not_json(data: bytes | str, exc: Exception) -> RowError:
    if isinstance(data, bytes) and not _is_utf8(data):
        return RowError("row: not valid UTF-8")
    return RowError(f"row: not valid JSON ({exc})")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def validate(
    data: bytes | str | Mapping[str, Any] | Row,
    *,
    now: dt.datetime | None = None,
    check_future: bool = True,
) -> ValidRow:
    """Validate one row (a JSON object, a mapping or a `Row`) and build its canonical line.

    Extra top-level keys are kept, after the schema's keys, in the order given.
    Raises `RowError` naming the field that is wrong. `check_future` False: a line that was
    accepted when it was received (the shipper's, reading shards on another host or later)
    is not judged again by this host's clock.
    """
    try:
        valid = _validate(data)
    except RecursionError:  # msgspec and the checks below recurse once per level of nesting
        raise RowError(
            "row: nested too deeply (more than about 1,000 levels, or a value holding itself)"
        ) from None
    if len(valid.line) > MAX_LINE_BYTES:
        raise RowError(
            f"row: {len(valid.line)} bytes stored, more than the {MAX_LINE_BYTES} a line may hold"
        )
    if check_future:
        _not_future(valid.row, now)
    return valid


def _validate(data: bytes | str | Mapping[str, Any] | Row) -> ValidRow:
    if isinstance(data, bytes) and len(data) <= MAX_LINE_BYTES and (fast := _canonical(data)):
        return ValidRow(*fast)
    if isinstance(data, Row):
        raw: Mapping[str, Any] = msgspec.structs.asdict(data)
    elif isinstance(data, bytes | str):
        raw = _decode_object(data)
    elif isinstance(data, Mapping):
        raw = data
    else:
        raise RowError(f"row: expected a JSON object, got {type(data).__name__}")
    try:
        row = msgspec.convert(raw, Row, str_keys=True)
    except msgspec.ValidationError as exc:
        raise RowError(_reason(exc, raw)) from None
    except (TypeError, ValueError) as exc:  # from __post_init__ on the Row path
        raise RowError(str(exc)) from None
    extras = {k: v for k, v in raw.items() if k not in ROW_FIELDS}
    _check_finite({"cost_breakdown": row.cost_breakdown, "error": row.error, **extras})
    return ValidRow(row, encode_line(row, extras))


def _check_finite(values: Mapping[str, Any]) -> None:
    """`RowError` naming the key when a number anywhere under it is infinite or NaN.

    JSON has no form for them: encoded they would become `null`, a value changed without a
    word (`1e400` in a line decodes to `inf`; a Python caller can pass `float("nan")`).
    Iterative, so that nesting depth costs no recursion; each container is looked into once,
    so that one holding itself (a caller's cycle, which the encoder then refuses) ends.
    """
    seen: set[int] = set()
    for key, value in values.items():
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, float):
                if not math.isfinite(item):
                    raise RowError(f"{key}: a number is out of range (JSON has no {item})")
            elif isinstance(item, Mapping | list | tuple):
                if id(item) in seen:
                    continue
                seen.add(id(item))
                stack.extend(item.values() if isinstance(item, Mapping) else item)


def _canonical(data: bytes) -> tuple[Row, bytes] | None:
    """The row and its line when `data` is already a canonical line without extra keys.

    What the client (and any writer of this module's lines) sends: one typed decode and an
    encode to compare, half the cost of the general path. Anything else, errors included,
    takes the general path, which keeps extras and words its errors.
    """
    body = data[:-1] if data.endswith(b"\n") else data
    try:
        row = _row_decoder.decode(body)
    except (
        msgspec.DecodeError,
        msgspec.ValidationError,
        TypeError,
        ValueError,
        UnicodeError,
        RecursionError,
    ):
        return None
    return (row, body + b"\n") if _encoder.encode(row) == body else None


def _not_future(row: Row, now: dt.datetime | None) -> None:
    now = now or dt.datetime.now(dt.UTC)
    if row.finished_at > now + MAX_FUTURE:
        raise RowError(
            f"finished_at: {row.finished_at.isoformat()} is more than a day in the future"
        )


def encode_line(row: Row, extras: Mapping[str, Any] | None = None) -> bytes:
    """Compact JSON for `row` plus `extras`, newline-terminated: the stored form."""
    try:
        body = _encoder.encode(row)
        if extras:
            body = body[:-1] + b"," + _encoder.encode(dict(extras))[1:]
    except (TypeError, UnicodeError, msgspec.EncodeError) as exc:
        # e.g. an object JSON has no form for, or a lone surrogate from a Python caller
        fields = msgspec.structs.asdict(row) | dict(extras or {})
        name = next((k for k, v in fields.items() if not _encodable(v)), "row")
        raise RowError(f"{name}: cannot be encoded as JSON ({exc})") from None
    return body + b"\n"


def _encodable(value: Any) -> bool:
    try:
        _encoder.encode(value)
    except (TypeError, UnicodeError, msgspec.EncodeError):
        return False
    return True
