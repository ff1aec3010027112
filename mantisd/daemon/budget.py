"""A budget of bytes and rows: what bounds the writer's queue and a connection's unanswered rows.

`anyio`'s memory object streams bound the number of items; the daemon's items are batches of
any size, so the stream carries them unbounded and a `Budget` bounds what they hold: whoever
puts an item in takes its share first (`acquire` waits while it does not fit: backpressure),
whoever takes it out gives the share back (`release`). Waiters are served in arrival order, so
a big batch is not starved by small ones; an item larger than the whole budget goes through
alone when nothing else is held, so no request can wait forever.
"""

from __future__ import annotations

import collections
import math

import anyio


class Budget:
    """At most `max_bytes` and `max_rows` held at once (`math.inf` for no bound)."""

    def __init__(self, *, max_bytes: float = math.inf, max_rows: float = math.inf) -> None:
        self.max_bytes = max_bytes
        self.max_rows = max_rows
        self.bytes = 0
        self.rows = 0
        self._waiters: collections.deque[tuple[int, int, anyio.Event]] = collections.deque()

    def _fits(self, nbytes: int, rows: int) -> bool:
        if not self.bytes and not self.rows:
            return True
        return self.bytes + nbytes <= self.max_bytes and self.rows + rows <= self.max_rows

    def try_acquire(self, nbytes: int, rows: int) -> bool:
        """Take the share at once if it fits and nobody waits before us."""
        if self._waiters or not self._fits(nbytes, rows):
            return False
        self.bytes += nbytes
        self.rows += rows
        return True

    async def acquire(self, nbytes: int, rows: int) -> None:
        """Take the share, waiting (in arrival order) until it fits."""
        if self.try_acquire(nbytes, rows):
            return
        waiter = (nbytes, rows, anyio.Event())
        self._waiters.append(waiter)
        try:
            await waiter[2].wait()
        except BaseException:  # cancelled: give back what was granted meanwhile, or leave the line
            if waiter[2].is_set():
                self.release(nbytes, rows)
            else:
                self._waiters.remove(waiter)
                self._grant()  # we may have been the head that blocked smaller ones
            raise

    def release(self, nbytes: int, rows: int) -> None:
        self.bytes -= nbytes
        self.rows -= rows
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self._fits(*self._waiters[0][:2]):
            nbytes, rows, event = self._waiters.popleft()
            self.bytes += nbytes
            self.rows += rows
            event.set()
