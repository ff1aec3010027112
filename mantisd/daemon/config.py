"""Every daemon setting in one frozen object, with its default (the CLI only fills it in)."""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """What the daemon serves, where, and within which limits.

    `socket` is None when the listening socket comes from systemd (`LISTEN_FDS`) or must be
    resolved by `mantisd.paths.resolve_socket_path`.

    Memory is bounded in bytes (design.md, "Trust"): rows wait for the writer as their stored
    lines, at most `queue_max_bytes` of them (and `queue_size` rows); a commit takes at most
    `batch_max_bytes` (and `batch_max_rows`) out of the queue. `server.py` states the worst case.
    """

    data_dir: Path
    socket: Path | None = None
    socket_mode: int = 0o660
    max_line_bytes: int = 64 * 1024
    max_connections: int = 256
    idle_timeout: float = 60.0
    queue_size: int = 8192
    queue_max_bytes: int = 64 * 1024 * 1024
    batch_max_rows: int = 2048
    batch_max_bytes: int = 8 * 1024 * 1024
    lock_timeout: float = 30.0
    max_inflight_per_connection: int = 1024
    allow_uids: frozenset[int] = frozenset()
    allow_gids: frozenset[int] = frozenset()
    drain_timeout: float = 10.0
    rejected_max_bytes: int = 16 * 1024 * 1024
    latency_window: int = 4096
