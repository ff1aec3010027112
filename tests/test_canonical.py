"""`mantisd.stats.canonical`: one text per JSON value, whatever text stored it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mantisd.stats.canonical import canonical_text, canonical_value


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        # as a line holds it, and as PostgreSQL's JSONB hands the same value back
        ('{"zone": "b", "a_long_key": 1}', '{"a_long_key":1,"zone":"b"}'),
        ('{"a_long_key":1.0,"zone":"b"}', '{"a_long_key":1,"zone":"b"}'),
        ("1e16", "10000000000000000"),
        ("10000000000000000", "10000000000000000"),
        ("[2.50, 1E2, -0.0, 1e-7]", "[2.5,100,0,1e-7]"),
        ("0.30000000000000004", "0.30000000000000004"),
        (
            '{"b": {"d": [true, null], "c": "\\u00e9"}, "a": 3}',
            '{"a":3,"b":{"c":"é","d":[true,null]}}',
        ),
    ],
)
def test_the_same_value_has_one_text(stored: str, shown: str) -> None:
    assert canonical_text(stored) == shown
    assert canonical_text(shown) == shown


def test_a_canonical_value_keeps_the_sorted_order() -> None:
    value = canonical_value(b'{"step": 7, "kind": "timeout", "detail": {"url": "u", "code": 5.0}}')
    assert list(value) == ["detail", "kind", "step"] and list(value["detail"]) == ["code", "url"]
    assert value["detail"]["code"] == 5 and isinstance(value["detail"]["code"], int)


@pytest.mark.parametrize(
    "stored", ["1e5000", "-1.8e308", "[1e309]", '{"b": 1e999, "a": 1}', "1e100000000"]
)
def test_a_number_beyond_a_double_keeps_its_text_and_costs_nothing(stored: str) -> None:
    """mantis never stores one (`validate` refuses it); a hand-written or foreign line may:
    its text as written, not a 5,000-digit integer (too long to print) or a hundred million
    digits (a hang). In a child with a deadline, so that a hang fails instead of waiting."""
    code = (
        "import sys; from mantisd.stats.canonical import canonical_text, canonical_value; "
        "print(canonical_text(sys.argv[1])); print(canonical_value(sys.argv[1]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, f" {stored} "], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [stored, stored]


def test_the_largest_double_is_still_spelled_out() -> None:
    """By the exact value of its text, as for every integral number."""
    assert canonical_text("1.7976931348623157e308") == "17976931348623157" + "0" * 292
