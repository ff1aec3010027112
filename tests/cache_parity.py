"""A pytest plugin: every file query of a test answered from the log and from the cache.

With `-p tests.cache_parity`, each call of `select`, `select_many` and `select_periods`
(`mantisd.stats.query`, through which every command reads a data dir) is answered three
times: from the log (`MANTIS_CACHE=off`), from the cache while it is built (cold) and from the
cache it built (warm; `MANTIS_CACHE=always`, a cache home of the test's own). The three
answers (runs, every value of every bucket, skipped lines, duplicates, shards read) must be
equal, or the three calls must fail alike; the test then goes on with the warm answer. So
every stats test checks that the cache changes no answer:

    .venv/bin/python -m pytest -p tests.cache_parity tests/test_cli_stats.py ...

(`tests/test_stats_cache.py` runs it over the stats tests.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mantisd.stats import query as query_module
from mantisd.stats.query import Selection

_inside = False


def summary(selection: Selection) -> dict[str, Any]:
    """Everything a command prints from a selection, however its runs are split."""
    return {
        "run_count": selection.run_count,
        "ignored": selection.ignored,
        "report": dataclasses.asdict(selection.report),
        "values": {name: selection.values(name) for name in sorted(selection.reported())},
    }


def summarize(answer: Any) -> Any:
    """A `select` / `select_many` / `select_periods` answer as comparable data."""
    if isinstance(answer, Selection):
        return summary(answer)
    if isinstance(answer, tuple):  # select_periods: (selections, report)
        selections, report = answer
        return [summary(s) for s in selections], dataclasses.asdict(report)
    return [summary(s) for s in answer]


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def three_ways(original: Callable[..., Any], cache_home: str) -> Callable[..., Any]:
    def answered(*args: Any, **kwargs: Any) -> Any:
        global _inside
        if _inside:  # select_many calls select: compared once, at the outer call
            return original(*args, **kwargs)
        on_shard = kwargs.pop("on_shard", None)
        outcomes = []
        _inside = True
        try:
            for which, mode in enumerate(("off", "always", "always")):
                with environment(MANTIS_CACHE=mode, XDG_CACHE_HOME=cache_home):
                    progress = on_shard if which == 2 else None
                    try:
                        answer = original(*args, **kwargs, on_shard=progress)
                    except Exception as exc:  # the same failure three times, or a difference
                        outcomes.append(("error", f"{type(exc).__name__}: {exc}", exc))
                    else:
                        outcomes.append(("answer", summarize(answer), answer))
        finally:
            _inside = False
        (kind, log, _), cold, warm = outcomes
        assert cold[:2] == (kind, log), f"a cold cache answers otherwise than the log: {cold}"
        assert warm[:2] == (kind, log), f"a warm cache answers otherwise than the log: {warm}"
        if kind == "error":
            raise warm[2]
        return warm[2]

    return answered


@pytest.fixture(autouse=True)
def _every_query_three_ways(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from mantisd.stats import cached_query  # noqa: F401 - there must be a cache to compare

    with tempfile.TemporaryDirectory(prefix="mantis-parity-") as cache_home:
        for name in ("select", "select_many", "select_periods"):
            original = getattr(query_module, name)
            wrapped = three_ways(original, cache_home)
            monkeypatch.setattr(query_module, name, wrapped)
            for module in list(sys.modules.values()):  # tests that imported it by name
                if module.__name__.startswith("tests.") and getattr(module, name, None) is original:
                    monkeypatch.setattr(module, name, wrapped)
        yield
