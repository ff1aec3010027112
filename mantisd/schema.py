"""The run row: its msgspec schema, validation and canonical stored form.

Layer 1 (stdlib + msgspec only): the daemon, the client fallback and the readers all share it,
so a row means the same thing on every path to disk.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

import msgspec

#: The nine wall-time buckets of the reference page, in the page's order. Others are allowed.
BUCKETS: Final = (
    "think",
    "claude_extract",
    "settle",
    "claude_ground",
    "perceive",
    "load",
    "act",
    "claude_verify",
    "overhead",
)

#: The aggregate that `mantis runs stats` always reports last.
TOTAL: Final = "total_time_s"

#: How far ahead of the receiving host's clock a `finished_at` may be (design.md).
MAX_FUTURE: Final = dt.timedelta(days=1)

Seconds = Annotated[float, msgspec.Meta(ge=0)]
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
        self.created_at = self.created_at.astimezone(dt.UTC)
        self.finished_at = self.finished_at.astimezone(dt.UTC)
        # JSON cannot carry NaN/inf, but Python callers (the client) can hand them in.
        if not math.isfinite(self.total_time_s):
            raise ValueError("total_time_s must be a finite number")
        for bucket, seconds in self.wall_time_breakdown.items():
            if not math.isfinite(seconds):
                raise ValueError(f"wall_time_breakdown.{bucket} must be a finite number")


ROW_FIELDS: Final = frozenset(Row.__struct_fields__)


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
        return self.row.finished_at.strftime("%Y-%m")


_encoder = msgspec.json.Encoder()
_dict_decoder = msgspec.json.Decoder(dict[str, Any])


def _reason(exc: msgspec.ValidationError) -> str:
    """msgspec says `... - at `$.field``; put the field first so a log line reads naturally."""
    text = str(exc)
    message, sep, where = text.rpartition(" - at `$.")
    if not sep:
        return text
    return f"{where.rstrip('`')}: {message}"


def validate(
    data: bytes | str | Mapping[str, Any] | Row, *, now: dt.datetime | None = None
) -> ValidRow:
    """Validate one row (a JSON object, a mapping or a `Row`) and build its canonical line.

    Extra top-level keys are kept, after the schema's keys, in the order given.
    Raises `RowError` naming the field that is wrong.
    """
    if isinstance(data, Row):
        raw: Mapping[str, Any] = msgspec.structs.asdict(data)
    elif isinstance(data, bytes | str):
        try:
            raw = _dict_decoder.decode(data)
        except msgspec.ValidationError:
            raise RowError("row: expected a JSON object") from None
        except msgspec.DecodeError as exc:
            raise RowError(f"row: not valid JSON ({exc})") from None
    elif isinstance(data, Mapping):
        raw = data
    else:
        raise RowError(f"row: expected a JSON object, got {type(data).__name__}")
    try:
        row = msgspec.convert(raw, Row, str_keys=True)
    except msgspec.ValidationError as exc:
        raise RowError(_reason(exc)) from None
    except (TypeError, ValueError) as exc:  # from __post_init__ on the Row path
        raise RowError(str(exc)) from None
    now = now or dt.datetime.now(dt.UTC)
    if row.finished_at > now + MAX_FUTURE:
        raise RowError(
            f"finished_at: {row.finished_at.isoformat()} is more than a day in the future"
        )
    return ValidRow(row, encode_line(row, {k: v for k, v in raw.items() if k not in ROW_FIELDS}))


def encode_line(row: Row, extras: Mapping[str, Any] | None = None) -> bytes:
    """Compact JSON for `row` plus `extras`, newline-terminated: the stored form."""
    body = _encoder.encode(row)
    if extras:
        try:
            tail = _encoder.encode(dict(extras))
        except (TypeError, msgspec.EncodeError) as exc:
            raise RowError(f"row: an extra key cannot be encoded as JSON ({exc})") from None
        body = body[:-1] + b"," + tail[1:]
    return body + b"\n"
