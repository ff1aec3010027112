"""Reply lines of the wire protocol, and the ticket that carries one row's reply back.

A connection puts one `Ticket` per request line in its reply queue, in order; the writer (or
the connection itself, for immediate answers) fills it in and wakes the connection. One wake-up
per connection per batch, not one event per row, keeps pipelined throughput high.
"""

from __future__ import annotations

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
    """One request line's place in its connection's reply order."""

    __slots__ = ("reply", "_waiter")

    def __init__(self, waiter: ReplyWaiter | None = None, reply: bytes | None = None) -> None:
        self.reply = reply
        self._waiter = waiter

    def resolve(self, reply: bytes) -> None:
        if self.reply is None:
            self.reply = reply
            if self._waiter is not None:
                self._waiter.wake()
