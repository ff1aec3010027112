"""Run a function over items in forked worker processes, yielding results in item order.

Why fork and pipes rather than `multiprocessing`: it costs no import time on the CLI's path,
the workers inherit the query without pickling it, and stopping early is closing the pipes
and ending our own children. Results travel as pickles; an item whose worker failed is
computed again here, so its error surfaces normally.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Generator, Sequence
from typing import BinaryIO, TypeVar, cast

T = TypeVar("T")
Item = TypeVar("Item")


def default_workers() -> int:
    """One worker per CPU this process may run on, at most 4."""
    if hasattr(os, "sched_getaffinity"):
        return min(4, len(os.sched_getaffinity(0)))
    return min(4, os.cpu_count() or 1)  # macOS has no affinity mask


def fan_out(work: Callable[[Item], T], items: Sequence[Item], *, workers: int) -> Generator[T]:
    """`work(item)` for each item, in order; worker k takes items k, k+workers, ...

    Results are computed ahead of the consumer (at most a pipe's worth per worker). Closing
    the generator early ends the workers. A process with other threads is never forked (a
    child could inherit a lock another thread holds): the items are then computed here.
    """
    import pickle
    import threading

    workers = max(1, min(workers, len(items)))
    if workers == 1 or threading.active_count() > 1:
        for item in items:
            yield work(item)
        return
    children: list[tuple[int, BinaryIO]] = []
    try:
        for k in range(workers):
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child (its coverage is not collected)
                code = 1
                try:
                    # The host program's handlers are not ours: SIGKILL ends us anyway, but
                    # a caught SIGTERM/SIGINT must not keep a worker alive.
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    os.close(read_end)
                    for _, earlier in children:  # the parent's ends only: EOF/EPIPE stay true
                        earlier.close()
                    with os.fdopen(write_end, "wb") as out:
                        for item in items[k::workers]:
                            try:
                                result: object = ("ok", work(item))
                            except Exception:
                                result = ("failed", None)
                            pickle.dump(result, out, protocol=pickle.HIGHEST_PROTOCOL)
                            out.flush()
                    code = 0
                finally:
                    os._exit(code)
            os.close(write_end)
            children.append((pid, os.fdopen(read_end, "rb")))
        pipes = [pipe for _, pipe in children]
        for index, item in enumerate(items):
            try:
                status, result = pickle.load(pipes[index % workers])
            except (EOFError, pickle.UnpicklingError):
                status, result = "failed", None
            yield cast(T, result) if status == "ok" else work(item)
    finally:
        for pid, pipe in children:
            pipe.close()
            try:
                os.kill(pid, signal.SIGKILL)  # a worker holds nothing worth cleaning up
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass  # already gone, or reaped by the kernel (SIGCHLD ignored)
