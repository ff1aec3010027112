"""Reply lines of the wire protocol, and the ticket that carries a batch's replies back.

A connection puts one `Ticket` per batch of request lines (the complete lines of one receive)
in its reply queue, in order; the ticket knows each line's reply or, for a row queued for the
writer, its shard month. The writer fills in each month's outcome and wakes the connection,
which writes the whole batch's replies in one go: one wake-up and one socket write per batch,
not per row, and every reply in its request's place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

import anyio
import msgspec

Kind = Literal["invalid", "storage", "limit", "unavailable"]

OK: Final = b'{"ok":true}\n'


def failure(kind: Kind, error: str) -> bytes:
    """`{"ok":false,"kind":...,"error":...}` as one reply line."""
    return msgspec.json.encode({"ok": False, "kind": kind, "error": error}) + b"\n"


def success(**fields: Any) -> bytes:
    """`{"ok":true,...}` with extra fields (control replies such as status)."""
    return msgspec.json.encode({"ok": True, **fields}) + b"\n"


class ReplyWaiter:
    """Lets a connection's reply task sleep until the writer has answered its oldest row."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait_for(self, ticket: Ticket) -> bytes:
        while ticket.reply is None:
            self._event = anyio.Event()  # no await since the check: a wake cannot be missed
            await self._event.wait()
        return ticket.reply


class Ticket:
    """One batch's place in its connection's reply order; `reply` is all its replies at once.

    `parts` lists, in request order, a reply already known (bytes) or the shard month of a row
    waiting for the writer (str); None when every line is a waiting row of `month` (the usual
    case, answered as one reply repeated). `nbytes` is what its replies will weigh, counting
    `OK` for each waiting row (a storage error is longer, by its path: bounded too).
    """

    __slots__ = ("reply", "rows", "nbytes", "_parts", "_month", "_waiter")

    def __init__(
        self,
        rows: int,
        *,
        reply: bytes | None = None,
        parts: list[bytes | str] | None = None,
        month: str = "",
        waiter: ReplyWaiter | None = None,
    ) -> None:
        self.rows = rows
        self.reply = reply
        if reply is not None:
            self.nbytes = len(reply)
        elif parts is None:
            self.nbytes = len(OK) * rows
        else:
            self.nbytes = sum(len(p) if isinstance(p, bytes) else len(OK) for p in parts)
        self._parts = parts
        self._month = month
        self._waiter = waiter

    def resolve(self, outcomes: Mapping[str, bytes]) -> None:
        """Each waiting row gets its month's outcome (written, or why not)."""
        if self.reply is not None:
            return
        if self._parts is None:
            self._answer(outcomes[self._month] * self.rows)
        else:
            self._answer(b"".join(p if isinstance(p, bytes) else outcomes[p] for p in self._parts))

    def resolve_all(self, reply: bytes) -> None:
        """Every waiting row gets `reply` (e.g. not taken because the daemon stops)."""
        if self.reply is not None:
            return
        if self._parts is None:
            self._answer(reply * self.rows)
        else:
            self._answer(b"".join(p if isinstance(p, bytes) else reply for p in self._parts))

    def _answer(self, reply: bytes) -> None:
        self.reply = reply
        self._parts = None
        if self._waiter is not None:
            self._waiter.wake()
