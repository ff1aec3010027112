"""The run row (`mantisd.schema`): what is accepted, what is rejected and how it is stored."""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mantisd.schema import BUCKETS, TOTAL, Row, RowError, ValidRow, validate
from tests.rows import make_row

NOW = dt.datetime(2026, 5, 13, 18, 30, tzinfo=dt.UTC)
REQUIRED = tuple(Row.__struct_fields__)


def row_at(**overrides: Any) -> dict[str, Any]:
    """A valid row finished shortly before `NOW`."""
    times = {"created_at": "2026-05-13T18:05:27Z", "finished_at": "2026-05-13T18:09:34Z"}
    return make_row(**(times | overrides))


def reject(data: Any, *, now: dt.datetime = NOW) -> str:
    """The `RowError` message for `data` (and nothing but a `RowError` may come out)."""
    with pytest.raises(RowError) as caught:
        validate(data, now=now)
    return str(caught.value)


def encode(row: dict[str, Any]) -> bytes:
    return msgspec.json.encode(row)


def test_page_constants() -> None:
    assert BUCKETS == (
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
    assert TOTAL == "total_time_s"
    assert set(REQUIRED) == set(make_row()), "make_row must send exactly the page's keys"


@pytest.mark.parametrize("form", ["mapping", "bytes", "str", "Row"])
def test_valid_row_in_every_input_form(form: str) -> None:
    raw = row_at()
    data: Any = {
        "mapping": raw,
        "bytes": encode(raw),
        "str": encode(raw).decode(),
        "Row": msgspec.convert(raw, Row),
    }[form]
    valid = validate(data, now=NOW)
    assert isinstance(valid, ValidRow)
    assert valid.run_id == raw["run_id"]
    assert valid.month == "2026-05"
    assert msgspec.json.decode(valid.line) == raw


@pytest.mark.parametrize("field", REQUIRED)
def test_every_key_is_required(field: str) -> None:
    raw = row_at()
    del raw[field]
    assert reject(raw) == f"{field}: missing required field"
    assert reject(encode(raw)) == f"{field}: missing required field"


@pytest.mark.parametrize("field", ["plan_signature", "model", "error"])
def test_nullable_fields(field: str) -> None:
    valid = validate(row_at(**{field: None}), now=NOW)
    assert msgspec.json.decode(valid.line)[field] is None


@pytest.mark.parametrize("field", sorted(set(REQUIRED) - {"plan_signature", "model", "error"}))
def test_other_fields_are_not_nullable(field: str) -> None:
    assert reject(row_at(**{field: None})).startswith(f"{field}: ")


@pytest.mark.parametrize("error", ["timeout", {"type": "Timeout", "step": 3}])
def test_error_may_be_a_string_or_an_object(error: Any) -> None:
    assert msgspec.json.decode(validate(row_at(error=error), now=NOW).line)["error"] == error


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_terminal_statuses(status: str) -> None:
    assert validate(row_at(status=status), now=NOW).row.status == status


@pytest.mark.parametrize("status", ["paused", "running", "SUCCEEDED", "", 1])
def test_other_statuses_are_rejected(status: Any) -> None:
    assert reject(row_at(status=status)).startswith("status: ")


def test_timestamps_are_stored_in_utc_with_z() -> None:
    raw = row_at(
        created_at="2026-05-13T20:05:27+02:00",
        finished_at="2026-05-13T13:09:34.250-05:00",
    )
    valid = validate(raw, now=NOW)
    stored = msgspec.json.decode(valid.line)
    assert stored["created_at"] == "2026-05-13T18:05:27Z"
    assert stored["finished_at"] == "2026-05-13T18:09:34.250000Z"
    assert valid.row.finished_at.tzinfo is dt.UTC


def test_month_is_taken_in_utc() -> None:
    """01:30 on June 1st at +02:00 is still May in UTC: the row belongs to the May shard."""
    june = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    valid = validate(row_at(finished_at="2026-06-01T01:30:00+02:00"), now=june)
    assert valid.month == "2026-05"
    assert msgspec.json.decode(valid.line)["finished_at"] == "2026-05-31T23:30:00Z"


def test_python_datetimes_are_accepted_and_normalised() -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    raw = row_at()
    raw["finished_at"] = dt.datetime(2026, 5, 13, 20, 9, 34, tzinfo=plus2)
    assert b'"finished_at":"2026-05-13T18:09:34Z"' in validate(raw, now=NOW).line
    raw["finished_at"] = dt.datetime(2026, 5, 13, 20, 9, 34)  # naive: no zone, rejected
    assert reject(raw).startswith("finished_at: ")


@pytest.mark.parametrize("field", ["created_at", "finished_at"])
@pytest.mark.parametrize(
    "value", ["2026-05-13T18:09:34", "2026-05-13", "yesterday", "2026-13-01T00:00:00Z", 1747159774]
)
def test_timestamps_need_a_zone_and_rfc3339(field: str, value: Any) -> None:
    assert reject(row_at(**{field: value})).startswith(f"{field}: ")


def test_finished_more_than_a_day_ahead_is_rejected() -> None:
    day = dt.timedelta(days=1)
    at_limit = (NOW + day).isoformat()
    beyond = (NOW + day + dt.timedelta(seconds=1)).isoformat()
    assert validate(row_at(finished_at=at_limit), now=NOW).month == "2026-05"
    message = reject(row_at(finished_at=beyond))
    assert message.startswith("finished_at: ") and "future" in message
    # The same row is fine for a host whose clock is later: only the receiving clock counts.
    assert validate(row_at(finished_at=beyond), now=NOW + day).month == "2026-05"
    # Far future: no bogus shard (e.g. 9999-12) can ever be created.
    assert reject(row_at(finished_at="9999-12-31T23:59:59Z")).startswith("finished_at: ")


@pytest.mark.parametrize("field", ["created_at", "finished_at"])
@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00"])
def test_timestamps_without_a_utc_instant_are_rejected_by_name(field: str, value: str) -> None:
    """Python cannot hold these in UTC: a RowError naming the field, never an OverflowError
    (which would escape every caller's error handling), from a dict and from JSON alike."""
    assert reject(row_at(**{field: value})) == f"{field}: {value} is out of range in UTC"
    with pytest.raises(RowError, match=f"^{field}: "):
        validate(msgspec.json.encode(row_at(**{field: value})), now=NOW)


def test_finished_before_1970_is_rejected_so_every_shard_name_is_yyyy_mm() -> None:
    assert reject(row_at(finished_at="0999-05-01T00:00:00Z")).startswith("finished_at: ")
    assert reject(row_at(finished_at="1969-12-31T23:59:59Z")).endswith("is before 1970")
    assert validate(row_at(finished_at="1970-01-01T00:00:00Z"), now=NOW).month == "1970-01"


def test_default_clock_is_now() -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=23)
    assert validate(make_row(finished_at=soon.isoformat())).month == soon.strftime("%Y-%m")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    with pytest.raises(RowError, match="^finished_at: "):
        validate(make_row(finished_at=later.isoformat()))


NUMBERS = ["total_time_s", "steps_executed", "viable"]


@pytest.mark.parametrize("field", NUMBERS)
def test_counts_and_durations_are_non_negative(field: str) -> None:
    assert reject(row_at(**{field: -1})).startswith(f"{field}: ")
    assert validate(row_at(**{field: 0}), now=NOW)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_total_must_be_finite(value: float) -> None:
    assert reject(row_at(total_time_s=value)) == "total_time_s: must be a finite number"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_bucket_must_be_finite(value: float) -> None:
    raw = row_at(wall_time_breakdown={"think": 1.0, "settle": value, "act": 2.0})
    assert reject(raw) == "wall_time_breakdown.settle: must be a finite number"


@pytest.mark.parametrize("literal", [b"1e999", b"-1e999", b"1E400"])
def test_json_overflow_is_rejected_naming_the_field(literal: bytes) -> None:
    line = encode(row_at(total_time_s=1.5)).replace(
        b'"total_time_s":1.5', b'"total_time_s":' + literal
    )
    assert reject(line).startswith("total_time_s: ")
    raw = row_at(wall_time_breakdown={"think": 1.0, "load": 2.5})
    line = encode(raw).replace(b'"load":2.5', b'"load":' + literal)
    assert reject(line).startswith("wall_time_breakdown.load: ")


def test_counts_must_be_integers() -> None:
    assert reject(row_at(steps_executed=1.5)) == "steps_executed: Expected `int`, got `float`"
    assert reject(row_at(viable=True)) == "viable: Expected `int`, got `bool`"
    assert reject(row_at(viable="3")) == "viable: Expected `int`, got `str`"


@pytest.mark.parametrize(
    ("bucket_value", "expected"),
    [
        (-0.5, "wall_time_breakdown.claude_verify: Expected `float` >= 0.0"),
        ("12s", "wall_time_breakdown.claude_verify: Expected `float`, got `str`"),
        (None, "wall_time_breakdown.claude_verify: Expected `float`, got `null`"),
        ([1.0], "wall_time_breakdown.claude_verify: Expected `float`, got `array`"),
    ],
)
def test_bad_bucket_is_named_by_key(bucket_value: Any, expected: str) -> None:
    breakdown = {b: 1.0 for b in BUCKETS} | {"claude_verify": bucket_value}
    raw = row_at(wall_time_breakdown=breakdown)
    assert reject(raw) == expected
    assert reject(encode(raw)) == expected


def test_other_buckets_are_allowed() -> None:
    raw = row_at(wall_time_breakdown={"think": 1, "gpu_warmup": 2.5}, total_time_s=4)
    stored = msgspec.json.decode(validate(raw, now=NOW).line)
    assert stored["wall_time_breakdown"] == {"think": 1.0, "gpu_warmup": 2.5}
    assert validate(row_at(wall_time_breakdown={}), now=NOW)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("schema_version", "1", "schema_version: Expected `int`, got `str`"),
        ("schema_version", 0, "schema_version: Expected `int` >= 1"),
        ("run_id", 42, "run_id: Expected `str`, got `int`"),
        ("run_id", "", "run_id: Expected `str` of length >= 1"),
        ("tenant_id", ["a"], "tenant_id: Expected `str`, got `array`"),
        ("profile_id", "", "profile_id: Expected `str` of length >= 1"),
        ("workflow_id", {}, "workflow_id: Expected `str`, got `object`"),
        ("plan_signature", 7, "plan_signature: Expected `str | null`, got `int`"),
        ("model", False, "model: Expected `str | null`, got `bool`"),
        ("total_time_s", "247", "total_time_s: Expected `float`, got `str`"),
        ("wall_time_breakdown", [1, 2], "wall_time_breakdown: Expected `object`, got `array`"),
        ("cost_breakdown", 0.12, "cost_breakdown: Expected `object`, got `float`"),
        ("error", 500, "error: Expected `str | object | null`, got `int`"),
    ],
)
def test_wrong_types_name_the_field(field: str, value: Any, expected: str) -> None:
    raw = row_at(**{field: value})
    assert reject(raw) == expected
    assert reject(encode(raw)) == expected


def test_non_string_keys_are_rejected() -> None:
    assert reject({**row_at(), 3: "x"}).startswith("row: bad key")
    assert reject(row_at(wall_time_breakdown={1: 2.0})).startswith("wall_time_breakdown: bad key")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"[1, 2]", "row: expected a JSON object"),
        (b'"a row"', "row: expected a JSON object"),
        (b"null", "row: expected a JSON object"),
        (b"17", "row: expected a JSON object"),
        (b"", "row: not valid JSON"),
        (b"{", "row: not valid JSON"),
        (b'{"run_id": "x"} trailing', "row: not valid JSON"),
        (b"{'run_id': 'x'}", "row: not valid JSON"),
        (b'{"run_id": "\xff"}', "row: not valid UTF-8"),
        ([1, 2], "row: expected a JSON object, got list"),
        (None, "row: expected a JSON object, got NoneType"),
        (3.5, "row: expected a JSON object, got float"),
    ],
)
def test_not_a_json_object(data: Any, expected: str) -> None:
    assert reject(data).startswith(expected)


def test_extra_keys_are_kept_in_order_after_the_schema_keys() -> None:
    raw = {"zz_first": 1, **row_at(), "gpu": {"kind": "H100", "count": 8}, "aa_last": [None, "x"]}
    valid = validate(raw, now=NOW)
    stored = msgspec.json.decode(valid.line)
    assert list(stored) == [*REQUIRED, "zz_first", "gpu", "aa_last"]
    assert stored["gpu"] == {"kind": "H100", "count": 8}
    assert stored["aa_last"] == [None, "x"]
    assert stored["zz_first"] == 1
    assert validate(encode(raw), now=NOW).line == valid.line


def test_a_value_that_cannot_be_encoded_is_a_row_error() -> None:
    assert reject(row_at(blob=object())).startswith("blob: cannot be encoded as JSON")
    # Lone surrogates (e.g. from `surrogateescape`) have no UTF-8 form: named, not a crash.
    assert reject(row_at(note="bad \udcff")).startswith("note: cannot be encoded as JSON")
    assert reject(row_at(run_id="r-\ud800")).startswith("run_id: cannot be encoded as JSON")
    message = reject(row_at(cost_breakdown={"usd": "\ud800"}))
    assert message.startswith("cost_breakdown: cannot be encoded as JSON")
    assert reject(encode(row_at()).replace(b'"default"', b'"\\ud800"', 1)).startswith(
        "row: not valid JSON"
    ), "an escaped lone surrogate in a line is refused by the decoder"


def test_canonical_line_round_trip() -> None:
    raw = row_at(
        created_at="2026-05-13T20:05:27+02:00",
        total_time_s=247,
        error='line one\nline two \u2603 "quoted" back\\slash',
        model="Modèle/α",
        cost_breakdown={"usd": 0.12, "tokens": {"in": 10, "out": 3}},
        note="extra",
    )
    valid = validate(raw, now=NOW)
    line = valid.line
    assert line.endswith(b"\n") and line.count(b"\n") == 1, "one line, inner newlines escaped"
    assert b": " not in line and b", " not in line.replace(b"two \xe2\x98\x83", b""), "compact"
    line.decode("utf-8")  # stored as UTF-8
    assert "Modèle/α".encode() in line
    decoded = msgspec.json.decode(line)
    assert decoded == {**raw, "created_at": "2026-05-13T18:05:27Z", "total_time_s": 247.0}
    assert msgspec.json.encode(decoded) + b"\n" == line, "canonical: re-encoding is identical"
    again = validate(line, now=NOW)
    assert again.line == line and again.row == valid.row, "validating a stored line is a no-op"


def test_stored_numbers_are_floats_for_durations() -> None:
    """An integral `total_time_s` (the page's example says 247) is stored as a float."""
    line = validate(row_at(total_time_s=247, wall_time_breakdown={"act": 3}), now=NOW).line
    assert b'"total_time_s":247.0' in line and b'"act":3.0' in line


def test_row_error_is_a_value_error() -> None:
    """Callers that only know `ValueError` still catch it."""
    assert issubclass(RowError, ValueError)


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("form", ["bytes", "str", "mapping", "struct error"])
def test_a_row_nested_too_deeply_is_a_row_error_on_every_path(form: str) -> None:
    deep = {"error": {"trace": nested(5000)}} if form == "struct error" else {"x": nested(5000)}
    raw = row_at(**deep)
    data: Any = {
        "bytes": lambda: b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        "str": lambda: encode(row_at())[:-1].decode() + ', "x": ' + "[" * 5000 + "]" * 5000 + "}",
        "mapping": lambda: raw,
        "struct error": lambda: raw,
    }[form]()
    assert reject(data) == (
        "row: nested too deeply (more than about 1,000 levels, or a value holding itself)"
    )


def test_a_row_nested_deeply_but_within_bounds_is_kept() -> None:
    line = validate(row_at(x=nested(200)), now=NOW).line
    assert msgspec.json.decode(line)["x"] == nested(200)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"total_time_s": 1.7e308}, "total_time_s"),
        ({"total_time_s": 1e9 + 1}, "total_time_s"),
        ({"total_time_s": 10**20}, "total_time_s"),
        ({"wall_time_breakdown": {"think": 1.0, "act": 1e300}}, "wall_time_breakdown.act"),
    ],
)
def test_absurd_durations_are_refused_and_the_bound_named(
    overrides: dict[str, Any], field: str
) -> None:
    for data in (row_at(**overrides), encode(row_at(**overrides))):
        message = reject(data)
        assert message.startswith(f"{field}: "), message
        assert message.endswith("is more than 1e+09 seconds (about 31 years), the bound")


def test_the_longest_allowed_duration_is_kept() -> None:
    valid = validate(row_at(total_time_s=1e9, wall_time_breakdown={"think": 1e9}), now=NOW)
    assert valid.row.total_time_s == 1e9


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        (b'"x": 1e400', "x"),  # JSONTestSuite i_number_huge_exp / real_pos_overflow
        (b'"x": -1e400', "x"),  # i_number_real_neg_overflow
        (b'"x": 1.0e+999999', "x"),
        (b'"x": {"a": [1, 1e400]}', "x"),
        (b'"cost_breakdown_extra": [[-1E400]]', "cost_breakdown_extra"),
    ],
)
def test_an_extra_number_out_of_a_doubles_range_is_refused_never_stored_as_null(
    extra: bytes, key: str
) -> None:
    line = encode(row_at())[:-1] + b", " + extra + b"}"
    assert reject(line).startswith(f"{key}: a number is out of range")


@pytest.mark.parametrize("field", ["cost_breakdown", "error"])
def test_an_infinite_number_inside_the_open_fields_is_refused(field: str) -> None:
    line = encode(row_at(**{field: {"usd": 0.5}})).replace(b"0.5", b"1e999")
    assert reject(line).startswith(f"{field}: a number is out of range")
    assert reject(row_at(**{field: {"usd": [math.nan]}})).startswith(f"{field}: a number")


@pytest.mark.parametrize(
    ("number", "stored"),
    [
        (b"1e-400", 0.0),  # i_number_double_huge_neg_exp: underflows to 0, as every parser does
        (b"123456789012345678901234567890", 123456789012345678901234567890),  # kept exactly
        (b"-123456789012345678901234567890", -123456789012345678901234567890),
        (b"1E22", 1e22),
    ],
)
def test_extra_numbers_a_double_can_hold_are_kept(number: bytes, stored: Any) -> None:
    line = encode(row_at())[:-1] + b', "x": ' + number + b"}"
    assert msgspec.json.decode(validate(line, now=NOW).line)["x"] == stored


@pytest.mark.parametrize("form", ["mapping", "bytes"])
def test_a_row_longer_than_any_reader_reads_is_refused(form: str) -> None:
    from mantisd.schema import MAX_LINE_BYTES

    raw = row_at(notes="x" * MAX_LINE_BYTES)
    message = reject(raw if form == "mapping" else encode(raw))
    assert message.startswith("row: ") and f"more than the {MAX_LINE_BYTES} a line" in message
    fits = row_at(notes="x" * (MAX_LINE_BYTES - len(validate(row_at(notes=""), now=NOW).line)))
    assert len(validate(fits, now=NOW).line) == MAX_LINE_BYTES


@pytest.mark.parametrize(
    "data",
    [b'{"a": 1e999 x}', b'{"a": 1e999, "b": }', b'{"a": [1e999, "\xff"]'],
)
def test_a_number_out_of_range_before_a_syntax_error_is_still_a_row_error(data: bytes) -> None:
    message = reject(data)
    assert message.startswith(("row: not valid JSON", "row: not valid UTF-8")), message


def test_the_length_bound_counts_the_newline_a_body_will_get() -> None:
    from mantisd.schema import MAX_LINE_BYTES

    body = validate(row_at(notes=""), now=NOW).line[:-1]
    padded = body.replace(b'"notes":""', b'"notes":"' + b"x" * (MAX_LINE_BYTES - len(body)) + b'"')
    assert len(padded) == MAX_LINE_BYTES
    assert "more than the" in reject(padded), "stored with its newline it would be too long"
    one_shorter = padded[:-3] + b'"}'
    assert len(validate(one_shorter, now=NOW).line) == MAX_LINE_BYTES


def test_the_future_check_can_be_left_to_the_receiving_host() -> None:
    ahead = row_at(finished_at="2026-05-16T00:00:00Z")
    assert "more than a day in the future" in reject(ahead)
    assert validate(ahead, now=NOW, check_future=False).row.run_id == ahead["run_id"]


#: Validates a row whose `cost_breakdown`, `error` or extra key holds itself; prints the error.
CHILD_CYCLE = """
import sys
from mantisd.schema import RowError, validate
from tests.rows import make_row
cycle = {}
cycle["self"] = cycle
row = make_row()
row[sys.argv[1]] = cycle
try:
    validate(row)
except RowError as exc:
    print(exc)
"""


@pytest.mark.parametrize("key", ["cost_breakdown", "error", "an_extra_key"])
def test_a_value_holding_itself_is_refused_not_walked_forever(key: str) -> None:
    """A caller's cyclic dict once kept the finiteness check walking it forever (the client's
    `append` hung): in a child with a deadline, so that a hang fails instead of waiting."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", CHILD_CYCLE, key],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    assert "or a value holding itself" in done.stdout


def test_a_shared_value_is_not_a_cycle() -> None:
    shared = {"usd": 1.5}
    row = make_row(cost_breakdown={"a": shared, "b": shared})
    assert b'"cost_breakdown":{"a":{"usd":1.5},"b":{"usd":1.5}}' in validate(row).line


def test_an_integer_too_big_for_a_double_is_refused_with_the_bound() -> None:
    """400 nines once raised OverflowError while wording the refusal (the daemon then closed
    the connection, with the other rows of it)."""
    line = msgspec.json.encode(make_row())
    huge = line.replace(b'"total_time_s":', b'"total_time_s":' + b"9" * 400 + b',"x":', 1)
    assert reject(huge) == (
        "total_time_s: a number beyond a double's range is more than 1e+09 seconds "
        "(about 31 years), the bound"
    )
