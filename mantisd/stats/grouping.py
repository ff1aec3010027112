"""`--by FIELD`: which runs belong together, as a key per run.

A group key is a tuple with one value per `--by` field: the field's string, or None when the
row lacks it or holds null (shown as `(none)`). A field is one of the row's descriptive keys
(`GROUP_FIELDS`) or any top-level key the page does not define (an "extra" key: rows may carry
them, and the store keeps them). Extra keys are decoded as raw JSON, added to the lean reader
structs only when a query groups by them; a non-string value (a number, an object) is keyed by
its canonical JSON text (`mantisd.stats.canonical`: keys sorted, numbers by value), which every
source computes alike.

The grouping is part of the query (`StatsQuery.by`), so that any source (files, a database)
can answer it; this module only knows rows, not where they come from.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, TypeAlias, TypeVar

import msgspec

from mantisd.schema import ROW_FIELDS
from mantisd.stats.canonical import canonical_text

#: Row keys worth grouping by (the page's descriptive strings).
GROUP_FIELDS: Final = ("model", "plan_signature", "profile_id", "tenant_id", "status")
#: How a missing (or null) value is shown.
NONE_LABEL: Final = "(none)"
GroupKey: TypeAlias = tuple[str | None, ...]
S = TypeVar("S", bound=msgspec.Struct)


def check_by(by: Sequence[str]) -> None:
    """A ValueError naming the problem when `by` is not a list of distinct groupable fields."""
    for name in by:
        if not name:
            raise ValueError("an empty field name cannot group runs")
        if '"' in name or "\\" in name:
            raise ValueError(f"{name!r} cannot group runs: a key name with a quote or a backslash")
        if name in ROW_FIELDS and name not in GROUP_FIELDS:
            raise ValueError(
                f"{name!r} cannot group runs: group by {', '.join(GROUP_FIELDS)}, or by a "
                "top-level key the page does not define (an extra key of the rows)"
            )
    repeated = sorted({name for name in by if list(by).count(name) > 1})
    if repeated:
        raise ValueError(f"{', '.join(map(repr, repeated))} given more than once")


def extra_fields(by: Sequence[str]) -> tuple[str, ...]:
    """The `by` fields that are not keys of the page's row (decoded only when asked for)."""
    return tuple(name for name in by if name not in ROW_FIELDS)


@functools.cache
def with_extras(base: type[S], extras: tuple[str, ...]) -> type[S]:
    """`base` plus one raw field per extra key (UNSET when a row lacks it); `base` if none.

    The attributes are `_extra0`, `_extra1`, ... renamed to the keys, so any key works (a
    Python keyword, a dash). Cached: one struct (and decoder) per set of keys.
    """
    if not extras:
        return base
    fields = [
        (
            f"_extra{i}",
            msgspec.Raw | msgspec.UnsetType,
            msgspec.field(default=msgspec.UNSET, name=name),
        )
        for i, name in enumerate(extras)
    ]
    struct = msgspec.defstruct(f"{base.__name__}By", fields, bases=(base,), gc=False)
    return struct  # type: ignore[return-value]  # defstruct is typed as returning a Struct type


def key_getter(by: Sequence[str]) -> Callable[[Any], GroupKey]:
    """A function from a decoded row (a struct built by `with_extras`) to its group key."""
    extras = extra_fields(by)
    getters: list[Callable[[Any], str | None]] = []
    for name in by:
        if name in extras:
            getters.append(_raw_value(operator.attrgetter(f"_extra{extras.index(name)}")))
        else:
            getters.append(operator.attrgetter(name))
    if not getters:
        return lambda row: ()
    return lambda row: tuple(get(row) for get in getters)


def _raw_value(get: Callable[[Any], Any]) -> Callable[[Any], str | None]:
    def value(row: Any) -> str | None:
        raw = get(row)
        if raw is msgspec.UNSET:
            return None
        text = bytes(raw)
        if text.startswith(b'"'):
            decoded: str = msgspec.json.decode(text, type=str)
            return decoded
        if text == b"null":
            return None
        return canonical_text(text)  # the same text from every source (JSONB reorders keys)

    return value


def label(by: Sequence[str], key: GroupKey) -> str:
    """`model = X` or `model = X, status = failed`: a group's title in tables."""
    return ", ".join(f"{name} = {value_label(v)}" for name, v in zip(by, key, strict=True))


def value_label(value: str | None) -> str:
    return NONE_LABEL if value is None else value


def json_key(key: GroupKey) -> str | None | list[str | None]:
    """The `key` of a group in JSON: the value (null for none), a list when several `--by`."""
    return key[0] if len(key) == 1 else list(key)


def busiest_first(counts: Iterable[tuple[GroupKey, int]]) -> list[GroupKey]:
    """Group keys by run count, largest first; ties by key (`(none)` after the values)."""
    ordered = sorted(counts, key=lambda item: (-item[1], [(v is None, v or "") for v in item[0]]))
    return [key for key, _ in ordered]
