"""One client connection: newline framing, validation, hand-off to the queue, ordered replies.

Two tasks per connection: the reader turns request lines into tickets (answered at once, or
queued for the writer) and the reply task writes the answers back in request order. The reply
queue is bounded, so a client that never reads its replies blocks only its own reader.
"""

from __future__ import annotations

import logging
import time
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
                    await self._read_requests(replies_in)
        finally:
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _read_requests(self, replies: MemoryObjectSendStream[Ticket]) -> None:
        buffered = BufferedByteReceiveStream(self.stream)
        try:
            with self.reading:
                await self._read_lines(buffered, replies)
        finally:
            if self.reading.cancel_called:
                self._answer_buffered(buffered, replies)

    async def _read_lines(
        self, buffered: BufferedByteReceiveStream, replies: MemoryObjectSendStream[Ticket]
    ) -> None:
        limit = self.config.max_line_bytes
        while True:
            self._push_idle_deadline()
            try:
                # limit + 1: a line of exactly `limit` bytes has its `\n` at index `limit`
                line = await buffered.receive_until(b"\n", limit + 1)
                too_long = len(line) > limit  # a long line that came whole in one chunk
            except anyio.DelimiterNotFound:
                line, too_long = bytes(buffered.buffer), True
            except anyio.IncompleteRead:
                if buffered.buffer:  # hung up mid-line: that partial row is not written
                    logger.debug("client left mid-line (%d bytes dropped)", len(buffered.buffer))
                return
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return
            if too_long:
                reason = f"line longer than {limit} bytes; closing the connection"
                self._reject("limit", reason, line)
                await self._send_ticket(replies, Ticket(reply=failure("limit", reason)))
                return
            ticket, job = self._take(line)
            await self._send_ticket(replies, ticket)
            if job is not None:
                await self._enqueue(job)

    def _answer_buffered(
        self, buffered: BufferedByteReceiveStream, replies: MemoryObjectSendStream[Ticket]
    ) -> None:
        """On shutdown, whole lines already received are still taken (the writer drains them);
        without waiting: whatever does not fit at once is left unanswered (the client falls
        back to a direct write)."""
        pending = buffered.buffer
        limit = self.config.max_line_bytes
        start = 0
        while (end := pending.find(b"\n", start)) >= 0 and end - start <= limit:
            ticket, job = self._take(pending[start:end])
            start = end + 1
            try:
                replies.send_nowait(ticket)
            except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            if job is not None:
                try:
                    self.queue.send_nowait(job)
                except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    ticket.resolve(UNAVAILABLE_STOPPING)

    def _take(self, line: bytes) -> tuple[Ticket, Job | None]:
        """A request line's ticket, answered at once, or with a job for the writer."""
        if len(line) <= _MAX_CONTROL_LINE and b'"op"' in line:
            reply = self._control(line)
            if reply is not None:
                return Ticket(reply=reply), None
        try:
            row = validate(line)
        except (RowError, UnicodeDecodeError) as exc:
            reason = "row: not valid UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
            self._reject("invalid", reason, line)
            return Ticket(reply=failure("invalid", reason)), None
        ticket = Ticket(self.waiter)
        return ticket, Job(row, ticket)

    async def _enqueue(self, job: Job) -> None:
        try:
            self.queue.send_nowait(job)
            return
        except anyio.WouldBlock:
            pass
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            job.ticket.resolve(UNAVAILABLE_STOPPING)
            return
        try:
            await self.queue.send(job)  # a full queue: backpressure on this reader
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            job.ticket.resolve(UNAVAILABLE_STOPPING)
        except BaseException:  # cancelled (shutdown, idle): the row was not taken
            job.ticket.resolve(UNAVAILABLE_STOPPING)
            raise

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
        now = time.monotonic()  # cheap; anyio's clock is only read when the deadline moves
        if now - self._idle_pushed >= _IDLE_GRANULARITY:
            self._idle_pushed = now
            self.reading.deadline = anyio.current_time() + self.config.idle_timeout

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
