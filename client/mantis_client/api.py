"""Module-level `append` / `append_async`: one shared `Client` per socket, data dir and
expected daemon uid."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from mantis_client.client import DEFAULT_TIMEOUT, Client, RowLike, log
from mantis_client.outcome import AppendResult, Outcome
from mantis_client.trust import TrustedUids
from mantisd.paths import resolve_data_dir, resolve_socket_path

PathArg = str | os.PathLike[str] | None

_shared: dict[tuple[Path, Path, TrustedUids], Client] = {}
_shared_lock = threading.Lock()


def default_client(
    socket_path: PathArg = None, data_dir: PathArg = None, *, expect_uid: int | None = None
) -> Client:
    """The shared client for these paths and expected daemon uid (resolved now, so changes
    of `$MANTIS_*` are seen). `ValueError` if `expect_uid` is not a uid."""
    trusted = TrustedUids.resolve(expect_uid)
    key = (resolve_socket_path(socket_path), resolve_data_dir(data_dir), trusted)
    with _shared_lock:
        client = _shared.get(key)
        if client is None:
            client = Client(socket_path=key[0], data_dir=key[1], expect_uid=expect_uid)
            _shared[key] = client
        return client


def append(
    row: RowLike,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    socket_path: PathArg = None,
    data_dir: PathArg = None,
    expect_uid: int | None = None,
) -> AppendResult:
    """Append one run row durably; never raises an `Exception` (see `Client.append`).

    `expect_uid`: a daemon uid to trust besides root and ours (else `$MANTIS_DAEMON_UID`).
    """
    client = _client_or_failure(socket_path, data_dir, expect_uid)
    if isinstance(client, AppendResult):
        return client
    return client.append(row, timeout=timeout)


async def append_async(
    row: RowLike,
    *,
    # Not a cancellation deadline (asyncio.timeout could not stop the worker thread): the
    # daemon wait before the direct write, the same knob as the sync `append`.
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    socket_path: PathArg = None,
    data_dir: PathArg = None,
    expect_uid: int | None = None,
) -> AppendResult:
    """`append` for asyncio (and anyio) callers; it never blocks the event loop."""
    client = _client_or_failure(socket_path, data_dir, expect_uid)
    if isinstance(client, AppendResult):
        return client
    return await client.append_async(row, timeout=timeout)


def _client_or_failure(
    socket_path: PathArg, data_dir: PathArg, expect_uid: int | None
) -> Client | AppendResult:
    """The shared client, or the DROPPED outcome saying why there is none."""
    try:
        return default_client(socket_path, data_dir, expect_uid=expect_uid)
    except Exception as exc:
        log.warning("dropped a row: cannot set up the client", exc_info=True)
        return AppendResult(Outcome.DROPPED, f"cannot set up the client: {exc}")


def _reset_after_fork() -> None:
    global _shared_lock
    _shared_lock = threading.Lock()  # a parent thread may have held it at fork time


os.register_at_fork(after_in_child=_reset_after_fork)
