"""Module-level `append` / `append_async`: one shared `Client` per socket and data dir."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from mantis_client.client import DEFAULT_TIMEOUT, Client, RowLike, log
from mantis_client.outcome import AppendResult, Outcome
from mantisd.paths import resolve_data_dir, resolve_socket_path

PathArg = str | os.PathLike[str] | None

_shared: dict[tuple[Path, Path], Client] = {}
_shared_lock = threading.Lock()


def default_client(socket_path: PathArg = None, data_dir: PathArg = None) -> Client:
    """The shared client for these paths (resolved now, so `$MANTIS_*` changes are seen)."""
    key = (resolve_socket_path(socket_path), resolve_data_dir(data_dir))
    with _shared_lock:
        client = _shared.get(key)
        if client is None:
            client = _shared[key] = Client(socket_path=key[0], data_dir=key[1])
        return client


def append(
    row: RowLike,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    socket_path: PathArg = None,
    data_dir: PathArg = None,
) -> AppendResult:
    """Append one run row durably; never raises an `Exception` (see `Client.append`)."""
    client = _client_or_none(socket_path, data_dir)
    if client is None:
        return AppendResult(Outcome.DROPPED, "cannot resolve the socket path or data dir")
    return client.append(row, timeout=timeout)


async def append_async(
    row: RowLike,
    *,
    # Not a cancellation deadline (asyncio.timeout could not stop the worker thread): the
    # daemon wait before the direct write, the same knob as the sync `append`.
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    socket_path: PathArg = None,
    data_dir: PathArg = None,
) -> AppendResult:
    """`append` for asyncio (and anyio) callers; it never blocks the event loop."""
    client = _client_or_none(socket_path, data_dir)
    if client is None:
        return AppendResult(Outcome.DROPPED, "cannot resolve the socket path or data dir")
    return await client.append_async(row, timeout=timeout)


def _client_or_none(socket_path: PathArg, data_dir: PathArg) -> Client | None:
    try:
        return default_client(socket_path, data_dir)
    except Exception:
        log.warning("dropped a row: cannot resolve the socket path or data dir", exc_info=True)
        return None


def _reset_after_fork() -> None:
    global _shared_lock
    _shared_lock = threading.Lock()  # a parent thread may have held it at fork time


os.register_at_fork(after_in_child=_reset_after_fork)
