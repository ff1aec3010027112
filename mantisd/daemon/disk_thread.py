"""One long-lived thread for the writer's blocking appends, and a cheap way back to the loop.

`anyio.to_thread.run_sync` costs ~80 us a round trip on this 2-core machine (a capacity
limiter, a worker queue built on `threading.Condition`, cancel scopes around the call); a
lone row's commit paid that on top of its fsync. Here a call goes to the thread through a
`queue.SimpleQueue` and its outcome comes back through `loop.call_soon_threadsafe`: a row's
round trip through the daemon, fsync aside, is 10-25% shorter (bench/README.md). The daemon
runs on anyio's asyncio backend (`mantisd.daemon.cli`), so the loop is asyncio's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

logger = logging.getLogger(__name__)

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


class DiskThread:
    """Runs blocking calls one at a time, in order, on its own thread (started on first use,
    ended by `close`).

    `idle=(seconds, call)`: `call()` runs on the thread once no call came for that long, and
    when the thread ends (the writer lets go of the shards it holds open).
    """

    def __init__(
        self, name: str = "mantisd-disk", idle: tuple[float, Callable[[], object]] | None = None
    ) -> None:
        self._name = name
        self._idle = idle
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """`func(*args)` on the thread. As with `anyio.to_thread.run_sync`, the caller waits
        for the call's end even when cancelled: a write in flight must be accounted for."""
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, functools.partial(func, *args)))
        with anyio.CancelScope(shield=True):
            result = await future
        return result

    def close(self) -> None:
        """End the thread once the calls already queued have run (it is a daemon thread: a
        call stuck in the kernel does not keep the process alive)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    def _serve(self) -> None:
        while (job := self._next_job()) is not None:
            loop, future, call = job
            try:
                result = call()
            except BaseException as exc:  # handed to the caller, as `to_thread` does
                _settle(loop, future, None, exc)
            else:
                _settle(loop, future, result, None)
        self._when_idle()

    def _next_job(self) -> _Job | None:
        if self._idle is None:
            return self._jobs.get()
        try:
            return self._jobs.get(timeout=self._idle[0])
        except queue.Empty:
            self._when_idle()
            return self._jobs.get()  # no timeout: an idle daemon is not woken every few seconds

    def _when_idle(self) -> None:
        if self._idle is not None:
            try:
                self._idle[1]()
            except Exception:
                logger.exception("%s: the idle call failed", self._name)


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    exc: BaseException | None,
) -> None:
    try:
        loop.call_soon_threadsafe(_set, future, result, exc)
    except RuntimeError:  # the loop is closed: nobody waits for this outcome any more
        pass


def _set(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(result)
    else:
        future.set_exception(exc)
