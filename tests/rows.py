"""Valid rows for tests: `make_row(**overrides)` is what the runtime would send."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from typing import Any

from mantisd.schema import BUCKETS

_counter = itertools.count()

RowFactory = Callable[..., dict[str, Any]]


def utc(ts: dt.datetime) -> str:
    """RFC 3339 with a `Z`, as the runtime writes timestamps."""
    return ts.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def make_row(**overrides: Any) -> dict[str, Any]:
    """A valid row finished now; keyword arguments replace or add keys."""
    n = next(_counter)
    finished = dt.datetime.now(dt.UTC).replace(microsecond=0)
    row: dict[str, Any] = {
        "schema_version": 1,
        "run_id": f"20260513_180527_{n:08x}",
        "tenant_id": "default",
        "profile_id": "default__alice-prod",
        "workflow_id": "default__marketplace-listings-v1",
        "plan_signature": "a1b2c3d4e5f6",
        "model": "Hcompany/Holo3-35B-A3B",
        "status": "succeeded",
        "created_at": utc(finished - dt.timedelta(seconds=247)),
        "finished_at": utc(finished),
        "total_time_s": 247.0,
        "wall_time_breakdown": {b: float(i + 1) for i, b in enumerate(BUCKETS)},
        "cost_breakdown": {"usd": 0.12},
        "steps_executed": 12,
        "viable": 3,
        "error": None,
    }
    row.update(overrides)
    return row
