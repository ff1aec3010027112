"""Realistic sample shards for demos, tests and benchmarks (`mantis dev generate`).

Rows look like the runtime's: many workflows with a skewed popularity, nine lognormal wall-time
buckets with per-workflow scales, ~10% failed runs, ~600-byte lines. Each shard is written in
`finished_at` order (one run per second at most), so the log's order and `ORDER BY finished_at`
agree. Deterministic for a given `seed` and `end`. Written in big chunks, not row by row with
fsync: this is disposable data, not the durable path.

A known regression can be planted for `compare` / `trend` demos and tests: `slow_bucket`
takes `slow_factor` times as long in runs that finished at or after `slow_since` (of
`slow_workflow` only, or of every workflow). The random draws are the same with or without it,
so the rest of the data is identical byte for byte.

Layer 1 (stdlib + msgspec). Options are keyword-only so that new knobs can be added without
breaking callers.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import msgspec

from mantisd import safe_fs
from mantisd.paths import RUNS_LOG, shard_path
from mantisd.schema import BUCKETS

#: Median seconds per bucket across workflows (the page's example table, roughly).
BUCKET_MEDIANS: Final = {
    "think": 90.0,
    "claude_extract": 65.0,
    "settle": 28.0,
    "claude_ground": 18.0,
    "perceive": 11.0,
    "load": 10.0,
    "act": 6.0,
    "claude_verify": 4.0,
    "overhead": 2.0,
}
#: Spread (sigma of the log) per bucket: model calls vary more than bookkeeping.
BUCKET_SIGMAS: Final = {
    "think": 0.35,
    "claude_extract": 0.4,
    "settle": 0.3,
    "claude_ground": 0.35,
    "perceive": 0.3,
    "load": 0.45,
    "act": 0.3,
    "claude_verify": 0.35,
    "overhead": 0.4,
}
TENANTS: Final = ("default", "acme", "globex")
MODELS: Final = ("Hcompany/Holo3-35B-A3B", "Hcompany/Holo3-7B", "anthropic/claude-sonnet-4")
TASKS: Final = (
    "marketplace-listings",
    "invoice-intake",
    "flight-search",
    "support-triage",
    "price-watch",
    "form-filler",
    "crm-sync",
    "job-board-scrape",
)
ERRORS: Final = ("step timed out", "page did not settle", "model refused", "viewport crashed")
CHUNK_ROWS: Final = 20_000


@dataclass(frozen=True)
class WorkflowProfile:
    """One workflow's identity and its typical seconds per bucket."""

    workflow_id: str
    tenant_id: str
    profile_id: str
    plan_signature: str
    model: str
    medians: dict[str, float]


def workflow_ids(workflows: int) -> list[str]:
    """The workflow ids `generate` uses, most popular first (the same for any seed)."""
    ids = []
    for i in range(workflows):
        tenant = TENANTS[i % len(TENANTS)]
        task = TASKS[(i // len(TENANTS)) % len(TASKS)]
        ids.append(f"{tenant}__{task}-v{i // (len(TENANTS) * len(TASKS)) + 1}")
    return ids


def _profiles(rng: random.Random, workflows: int) -> list[WorkflowProfile]:
    profiles = []
    for workflow_id in workflow_ids(workflows):
        tenant = workflow_id.partition("__")[0]
        size = rng.lognormvariate(0.0, 0.35)  # some workflows are simply longer
        profiles.append(
            WorkflowProfile(
                workflow_id=workflow_id,
                tenant_id=tenant,
                profile_id=f"{tenant}__{rng.choice(('alice', 'bob', 'ci'))}-prod",
                plan_signature=f"{rng.getrandbits(48):012x}",
                model=rng.choice(MODELS),
                medians={
                    b: BUCKET_MEDIANS[b] * size * rng.lognormvariate(0.0, 0.25) for b in BUCKETS
                },
            )
        )
    return profiles


def _month_start(year: int, month: int) -> int:
    return calendar.timegm((year, month, 1, 0, 0, 0))


def _month_spans(months: int, end: dt.datetime) -> list[tuple[str, int, int]]:
    """(`YYYY-MM`, first second, second after the last) for `months` months ending at `end`.

    `end` is exclusive: the first of a month at midnight ends the month before.
    """
    stop = math.ceil(end.timestamp())
    last = dt.datetime.fromtimestamp(stop - 1, dt.UTC)
    year, month = last.year, last.month
    spans = []
    for _ in range(months):
        start = _month_start(year, month)
        spans.append((f"{year:04d}-{month:02d}", start, stop))
        stop = start
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    spans.reverse()
    return spans


def _stamp(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass(frozen=True)
class Slowdown:
    """`bucket` takes `factor` times as long from `since` (epoch seconds) on, in `workflow`'s
    runs (None: every workflow's)."""

    bucket: str
    factor: float
    since: float
    workflow: str | None

    def factor_for(self, wf: WorkflowProfile, finished: int) -> float:
        if finished >= self.since and self.workflow in (None, wf.workflow_id):
            return self.factor
        return 1.0


def _row(
    rng: random.Random,
    wf: WorkflowProfile,
    finished: int,
    failed: bool,
    slow: tuple[str, float] = ("", 1.0),
) -> dict[str, Any]:
    gauss = rng.gauss
    cut = rng.uniform(0.1, 1.0) if failed else 1.0  # a failed run stops part-way through
    slow_bucket, slow_factor = slow
    breakdown = {
        b: round(
            math.exp(gauss(0.0, BUCKET_SIGMAS[b]))
            * wf.medians[b]
            * cut
            * (slow_factor if b == slow_bucket else 1.0),
            3,
        )
        for b in BUCKETS
    }
    total = round(sum(breakdown.values()) + rng.uniform(0.0, 2.0), 3)
    steps = rng.randint(4, 20)
    return {
        "schema_version": 1,
        "run_id": time.strftime("%Y%m%d_%H%M%S", time.gmtime(finished))
        + f"_{rng.getrandbits(32):08x}",
        "tenant_id": wf.tenant_id,
        "profile_id": wf.profile_id,
        "workflow_id": wf.workflow_id,
        "plan_signature": wf.plan_signature,
        "model": wf.model,
        "status": "failed" if failed else "succeeded",
        "created_at": _stamp(finished - math.ceil(total)),
        "finished_at": _stamp(finished),
        "total_time_s": total,
        "wall_time_breakdown": breakdown,
        "cost_breakdown": {
            "usd": round(total * 0.0009 * rng.uniform(0.8, 1.2), 4),
            "input_tokens": steps * rng.randint(3000, 9000),
            "output_tokens": steps * rng.randint(200, 900),
            "gpu_s": round(breakdown["think"] + breakdown["perceive"], 3),
        },
        "steps_executed": steps,
        "viable": rng.randint(0, 5),
        "error": rng.choice(ERRORS) if failed else None,
    }


def sample_chunks(
    *,
    rows: int,
    months: int = 1,
    workflows: int = 50,
    seed: int = 0,
    end: dt.datetime | None = None,
    failed_share: float = 0.1,
    slow_bucket: str | None = None,
    slow_factor: float = 1.3,
    slow_since: dt.datetime | None = None,
    slow_workflow: str | None = None,
) -> Iterator[tuple[str, bytes]]:
    """(`YYYY-MM`, JSONL bytes) chunks, each month's rows in `finished_at` order.

    Rows are spread evenly in time over the `months` months that end at `end` (default: now),
    so a partial last month gets its share; popularity of workflow k is about 1/k.
    `slow_*`: see the module's docstring (`slow_since` None: from the start).
    """
    if rows < 0 or months < 1 or workflows < 1:
        raise ValueError("rows must be >= 0, months and workflows >= 1")
    slowdown = _slowdown(slow_bucket, slow_factor, slow_since, slow_workflow, workflows)
    rng = random.Random(seed)
    profiles = _profiles(rng, workflows)
    weights = [1.0 / (k + 1) for k in range(workflows)]
    cum_weights = [sum(weights[: k + 1]) for k in range(workflows)]
    spans = _month_spans(months, end or dt.datetime.now(dt.UTC))
    seconds = sum(stop - start for _, start, stop in spans)
    if rows > seconds:
        raise ValueError(f"{rows} rows do not fit one per second in {seconds} s")
    encoder = msgspec.json.Encoder()
    done = 0
    elapsed = 0
    for month, start, stop in spans:
        elapsed += stop - start
        count = round(rows * elapsed / seconds) - done
        done += count
        stamps = sorted(rng.sample(range(start, stop), count))
        for at in range(0, count, CHUNK_ROWS):
            part = stamps[at : at + CHUNK_ROWS]
            chosen = rng.choices(profiles, cum_weights=cum_weights, k=len(part))
            batch = [
                _row(
                    rng,
                    wf,
                    finished,
                    rng.random() < failed_share,
                    (slowdown.bucket, slowdown.factor_for(wf, finished)) if slowdown else ("", 1.0),
                )
                for wf, finished in zip(chosen, part, strict=True)
            ]
            yield month, encoder.encode_lines(batch)


def _slowdown(
    bucket: str | None,
    factor: float,
    since: dt.datetime | None,
    workflow: str | None,
    workflows: int,
) -> Slowdown | None:
    if bucket is None:
        if since is not None or workflow is not None:
            raise ValueError("slow_since and slow_workflow need a slow_bucket")
        return None
    if bucket not in BUCKETS:
        raise ValueError(f"slow_bucket {bucket!r} is not one of {', '.join(BUCKETS)}")
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"slow_factor must be a positive number, not {factor}")
    if workflow is not None and workflow not in workflow_ids(workflows):
        raise ValueError(f"slow_workflow {workflow!r} is not one of the {workflows} workflows")
    start = -math.inf if since is None else since.timestamp()
    return Slowdown(bucket, factor, start, workflow)


def generate(
    data_dir: Path,
    *,
    rows: int,
    months: int = 1,
    workflows: int = 50,
    seed: int = 0,
    end: dt.datetime | None = None,
    failed_share: float = 0.1,
    slow_bucket: str | None = None,
    slow_factor: float = 1.3,
    slow_since: dt.datetime | None = None,
    slow_workflow: str | None = None,
) -> list[Path]:
    """Write sample shards under `data_dir`; refuses to touch a shard that already exists.

    Returns the shard paths written, oldest month first. Options: see `sample_chunks`.
    """
    root = safe_fs.open_root(data_dir, create=True)  # `runs_log` as a writer opens it (Trust)
    try:
        runs_log = safe_fs.open_dir(root, data_dir, RUNS_LOG, create=True)
    finally:
        os.close(root)
    written: list[Path] = []
    out = None
    try:
        for month, chunk in sample_chunks(
            rows=rows,
            months=months,
            workflows=workflows,
            seed=seed,
            end=end,
            failed_share=failed_share,
            slow_bucket=slow_bucket,
            slow_factor=slow_factor,
            slow_since=slow_since,
            slow_workflow=slow_workflow,
        ):
            path = shard_path(data_dir, month)
            if not written or written[-1] != path:
                if out is not None:
                    out.close()
                out = _create_new(runs_log, path)  # never mix sample rows into a real log
                written.append(path)
            assert out is not None
            out.write(chunk)
    finally:
        if out is not None:
            out.close()
        os.close(runs_log)
    return written


def _create_new(runs_log: int, path: Path) -> BinaryIO:
    """Create `path` in the `runs_log` dir open as `runs_log`; nothing there is replaced or
    followed (`O_EXCL` fails on any existing entry, a link included)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path.name, flags, 0o666, dir_fd=runs_log)
    except FileExistsError as exc:
        raise FileExistsError(exc.errno, exc.strerror, str(path)) from None
    return os.fdopen(fd, "wb")
