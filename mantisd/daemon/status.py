"""The daemon's counters, and the `{"op":"status"}` view of them."""

from __future__ import annotations

import collections
import dataclasses
import statistics
import time
from typing import Any

from mantisd.safe_fs import moved_aside_count


def _percentile(samples: list[float], q: int) -> float | None:
    if not samples:
        return None
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


@dataclasses.dataclass
class Counters:
    """Plain counters updated by the writer and the connections (one event loop: no locks)."""

    latency_window: int = 4096
    rows_written: int = 0
    rows_rejected: int = 0
    rows_failed: int = 0
    batches: int = 0
    batched_rows: int = 0
    storage_errors: int = 0
    #: shard groups whose commit had to wait for a lock held by another process
    lock_waits: int = 0
    connections: int = 0
    connections_total: int = 0
    connections_refused: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)
    commit_seconds: collections.deque[float] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        # Only the recent past: a bounded window keeps memory flat on a long-running daemon.
        self.commit_seconds = collections.deque(maxlen=self.latency_window)
        self._latencies: tuple[float | None, float | None] = (None, None)
        self._latencies_at = -1  # `batches` when they were computed

    def snapshot(self, *, queue_depth: int, writer_busy: bool) -> dict[str, Any]:
        """Counters as the status reply carries them (latencies in milliseconds). The latency
        percentiles (a sort of the window) are computed again only after a commit: a client
        pipelining status requests costs the event loop next to nothing each."""
        if self._latencies_at != self.batches:
            samples = sorted(self.commit_seconds)
            self._latencies = (_percentile(samples, 50), _percentile(samples, 99))
            self._latencies_at = self.batches
        p50, p99 = self._latencies
        return {
            "rows_written": self.rows_written,
            "rows_rejected": self.rows_rejected,
            "rows_failed": self.rows_failed,
            "batches": self.batches,
            "mean_rows_per_batch": round(self.batched_rows / self.batches, 2)
            if self.batches
            else 0.0,
            "queue_depth": queue_depth,
            "writer_busy": writer_busy,
            "connections": self.connections,
            "connections_total": self.connections_total,
            "connections_refused": self.connections_refused,
            "fsync_p50_ms": None if p50 is None else round(p50 * 1000, 3),
            "fsync_p99_ms": None if p99 is None else round(p99 * 1000, 3),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "storage_errors": self.storage_errors,
            "lock_waits": self.lock_waits,
            # Links, FIFOs, directories... found where a shard or the rejected log belongs
            # and moved aside (counted by the store, process-wide: one daemon per process).
            "unsafe_moved_aside": moved_aside_count(),
        }
