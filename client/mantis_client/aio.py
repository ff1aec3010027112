"""Run the blocking append path off the caller's event loop, with the stdlib only.

`mantis_client` must not import anyio (layering), so it dispatches by hand: a worker thread
of the running asyncio loop (which is also what anyio's asyncio backend runs on), trio's own
thread runner when the caller already runs under trio, and otherwise the call itself, which
is bounded by the timeout plus one direct write anyway.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def run_blocking(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`func(*args, **kwargs)` in a worker thread of whichever event loop is running."""
    # Imported here: a sync-only runtime never pays for asyncio (~25 ms), and a coroutine
    # driven by asyncio finds it in sys.modules already.
    import asyncio

    call = functools.partial(func, *args, **kwargs)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        # run_in_executor rather than to_thread: no contextvars copy, nothing to propagate.
        return await loop.run_in_executor(None, call)
    trio = sys.modules.get("trio")  # only if the caller imported it: never import it here
    if trio is not None:
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass
        else:
            result: T = await trio.to_thread.run_sync(call)
            return result
    return call()
