"""One client connection: newline framing, validation, hand-off to the queue, ordered replies.

Two tasks per connection: the reader turns request lines into tickets (answered at once, or
queued for the writer) and the reply task writes the answers back in request order. The reply
queue is bounded, so a client that never reads its replies blocks only its own reader.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mantisd.daemon.config import Config
from mantisd.daemon.rejected import RejectedLog
from mantisd.daemon.replies import ReplyWaiter, Ticket, failure, success
from mantisd.daemon.status import Counters
from mantisd.daemon.writer import Job
from mantisd.schema import RowError, validate

logger = logging.getLogger(__name__)

#: A control request is tiny (`{"op":"status"}`); longer lines are always rows.
_MAX_CONTROL_LINE = 256
#: Replies gathered into one socket write at most.
_MAX_REPLIES_PER_WRITE = 4096
#: How often (seconds) the idle deadline is pushed back; it need not move on every line.
_IDLE_GRANULARITY = 1.0

_control_decoder = msgspec.json.Decoder(dict[str, Any])

UNAVAILABLE_STOPPING = failure("unavailable", "mantisd is shutting down; write the row directly")


class Connection:
    """Serves one client until it hangs up, idles out, overflows a line, or the daemon stops."""

    def __init__(
        self,
        stream: SocketStream,
        config: Config,
        queue: MemoryObjectSendStream[Job],
        counters: Counters,
        rejected: RejectedLog,
        status: Callable[[], dict[str, Any]],
    ) -> None:
        self.stream = stream
        self.config = config
        self.queue = queue
        self.counters = counters
        self.rejected = rejected
        self.status = status
        self.waiter = ReplyWaiter()
        self.reading = anyio.CancelScope()
        self._idle_pushed = 0.0

    def stop_reading(self) -> None:
        """Stop taking requests (shutdown); what was already taken is still answered."""
        self.reading.cancel()

    async def serve(self) -> None:
        replies_in, replies_out = anyio.create_memory_object_stream[Ticket](
            self.config.max_inflight_per_connection
        )
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write_replies, replies_out, tg.cancel_scope)
                async with replies_in, self.queue:
                    with self.reading:
                        await self._read_requests(replies_in)
        finally:
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _read_requests(self, replies: MemoryObjectSendStream[Ticket]) -> None:
        buffered = BufferedByteReceiveStream(self.stream)
        limit = self.config.max_line_bytes
        while True:
            self._push_idle_deadline()
            try:
                line = await buffered.receive_until(b"\n", limit)
            except anyio.DelimiterNotFound:
                line = bytes(buffered.buffer)
            except anyio.IncompleteRead:
                if buffered.buffer:  # hung up mid-line: that partial row is not written
                    logger.debug("client left mid-line (%d bytes dropped)", len(buffered.buffer))
                return
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return
            if len(line) > limit:  # also when the whole long line came in one chunk
                reason = f"line longer than {limit} bytes; closing the connection"
                self._reject("limit", reason, line)
                await self._send_ticket(replies, Ticket(reply=failure("limit", reason)))
                return
            await self._handle(line, replies)

    async def _handle(self, line: bytes, replies: MemoryObjectSendStream[Ticket]) -> None:
        if len(line) <= _MAX_CONTROL_LINE and b'"op"' in line:
            reply = self._control(line)
            if reply is not None:
                await self._send_ticket(replies, Ticket(reply=reply))
                return
        try:
            row = validate(line)
        except (RowError, UnicodeDecodeError) as exc:
            reason = "row: not valid UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
            self._reject("invalid", reason, line)
            await self._send_ticket(replies, Ticket(reply=failure("invalid", reason)))
            return
        ticket = Ticket(self.waiter)
        await self._send_ticket(replies, ticket)
        job = Job(row, ticket)
        try:
            self.queue.send_nowait(job)
        except anyio.WouldBlock:
            try:
                await self.queue.send(job)  # a full queue: backpressure on this reader
            except BaseException:
                ticket.resolve(UNAVAILABLE_STOPPING)
                raise
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            ticket.resolve(UNAVAILABLE_STOPPING)

    @staticmethod
    async def _send_ticket(replies: MemoryObjectSendStream[Ticket], ticket: Ticket) -> None:
        try:
            replies.send_nowait(ticket)
        except anyio.WouldBlock:
            await replies.send(ticket)  # too many unanswered rows: wait for the client to read

    def _control(self, line: bytes) -> bytes | None:
        """The reply to a control request, or None when the line is not one (then: a row)."""
        try:
            request = _control_decoder.decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return None
        if set(request) != {"op"}:
            return None
        if request["op"] == "status":
            return success(status=self.status())
        return failure("invalid", f"unknown op {request['op']!r}; known: 'status'")

    def _reject(self, kind: str, reason: str, line: bytes) -> None:
        self.counters.rows_rejected += 1
        self.rejected.record(kind, reason, line)

    def _push_idle_deadline(self) -> None:
        now = anyio.current_time()
        if now - self._idle_pushed >= _IDLE_GRANULARITY:
            self._idle_pushed = now
            self.reading.deadline = now + self.config.idle_timeout

    async def _write_replies(
        self, tickets: MemoryObjectReceiveStream[Ticket], connection: anyio.CancelScope
    ) -> None:
        """Write answers in request order, many per socket write when they are ready."""
        pending: list[bytes] = []
        async with tickets:
            while True:
                try:
                    ticket = tickets.receive_nowait()
                except anyio.WouldBlock:
                    if pending:
                        if not await self._flush(pending, connection):
                            return
                        continue
                    try:
                        ticket = await tickets.receive()
                    except anyio.EndOfStream:
                        break
                except anyio.EndOfStream:
                    break
                if ticket.reply is None:
                    if pending and not await self._flush(pending, connection):
                        return
                    await self.waiter.wait_for(ticket)
                assert ticket.reply is not None
                pending.append(ticket.reply)
                if len(pending) >= _MAX_REPLIES_PER_WRITE:
                    if not await self._flush(pending, connection):
                        return
        if pending:
            await self._flush(pending, connection)

    async def _flush(self, pending: list[bytes], connection: anyio.CancelScope) -> bool:
        """Send the gathered replies; False (and the connection cancelled) if the client is gone
        or has not read anything for the idle timeout."""
        data = b"".join(pending)
        pending.clear()
        with anyio.move_on_after(self.config.idle_timeout) as timeout:
            try:
                await self.stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                connection.cancel()
                return False
        if timeout.cancelled_caught:
            logger.info(
                "closing a connection that has not read its replies for %.0fs",
                self.config.idle_timeout,
            )
            connection.cancel()
            return False
        return True
