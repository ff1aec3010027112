"""One client connection: newline framing, batch validation, hand-off to the queue, ordered replies.

Two tasks per connection. The reader takes the complete lines of a receive as one batch,
without splitting them into lines: `mantisd.batch.Acceptor` accepts the whole buffer, as it
came, with a few calls in C (the usual case: canonical rows of this month). Otherwise the
lines are split and judged one by one (`mantisd.batch.validate_lines`, which words each
refusal as `mantisd.schema.validate` does), control requests and refused lines answered at
once in their place. The accepted rows go to the writer as one queue item that holds only
their stored lines, and one ticket for the whole batch goes in the reply queue. The reply task
writes the replies in request order, one socket write for all the batches that are answered
(straight to the socket when it takes them at once, the usual case).

Two budgets (`budget.py`) bound what a connection can make the daemon hold, both waited for
by the reader only: the writer's queue, shared, in bytes and rows (a full queue slows every
reader: backpressure), and the connection's own unanswered requests, in rows
(`max_inflight_per_connection`) and reply bytes (`MAX_REPLY_BYTES`: an error reply can be
as long as its line): a client that never reads its replies blocks only its own reader.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import msgspec
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mantisd.batch import Acceptor, AsSent, has_line_longer, validate_lines
from mantisd.daemon.budget import Budget
from mantisd.daemon.config import Config
from mantisd.daemon.rejected import RejectedLog
from mantisd.daemon.replies import ReplyWaiter, Ticket, failure, success
from mantisd.daemon.status import Counters
from mantisd.daemon.writer import Batch

logger = logging.getLogger(__name__)

#: Bytes asked of the socket per receive: the most one batch can hold, with a partial line.
RECEIVE_BYTES = 256 * 1024
#: Reply bytes waiting for one client to read them, at most (besides `max_inflight` rows).
MAX_REPLY_BYTES = 64 * 1024
#: A control request is tiny (`{"op":"status"}`); longer lines are always rows.
_MAX_CONTROL_LINE = 256
#: Batches whose replies are gathered into one socket write, at most.
_MAX_BATCHES_PER_WRITE = 64
#: How often (seconds), at most, the idle deadline is pushed back; it need not move on every
#: line (a quarter of the idle timeout when that is shorter).
_IDLE_GRANULARITY = 1.0

_control_decoder = msgspec.json.Decoder(dict[str, Any])

UNAVAILABLE_STOPPING = failure("unavailable", "mantisd is shutting down; write the row directly")


class Connection:
    """Serves one client until it hangs up, idles out, overflows a line, or the daemon stops."""

    def __init__(
        self,
        stream: SocketStream,
        config: Config,
        queue: MemoryObjectSendStream[Batch],
        queue_budget: Budget,
        counters: Counters,
        rejected: RejectedLog,
        status: Callable[[], dict[str, Any]],
    ) -> None:
        self.stream = stream
        #: the same socket (non-blocking), for replies the kernel takes at once (`_flush`)
        self._socket = stream.extra(SocketAttribute.raw_socket)
        self.config = config
        self.queue = queue
        self.queue_budget = queue_budget
        self.counters = counters
        self.rejected = rejected
        self.status = status
        self.waiter = ReplyWaiter()
        self.inflight = Budget(
            max_bytes=MAX_REPLY_BYTES, max_rows=config.max_inflight_per_connection
        )
        self.reading = anyio.CancelScope()
        self._batch_rows = min(config.batch_max_rows, config.max_inflight_per_connection)
        self._acceptor = Acceptor()
        #: what was received and not taken yet, oldest first: a whole receive's complete lines
        #: as they came (`\n`-terminated, not validated yet), a batch of lines, or a batch
        #: already accepted as sent
        self._received: list[bytes | list[bytes] | AsSent] = []
        self._idle_pushed = 0.0
        #: a deadline moved at most this often still leaves 3/4 of the idle timeout to run
        self._idle_every = min(_IDLE_GRANULARITY, config.idle_timeout / 4)

    def stop_reading(self) -> None:
        """Stop taking requests (shutdown); what was already taken is still answered."""
        self.reading.cancel()

    async def serve(self) -> None:
        # Unbounded in items: `self.inflight` bounds the rows their tickets stand for.
        replies_in, replies_out = anyio.create_memory_object_stream[Ticket](math.inf)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write_replies, replies_out, tg.cancel_scope)
                async with replies_in, self.queue:
                    await self._read_requests(replies_in)
        finally:
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _read_requests(self, replies: MemoryObjectSendStream[Ticket]) -> None:
        try:
            with self.reading:
                await self._read_lines(replies)
        finally:
            if self.reading.cancel_called:
                self._take_received_nowait(replies)

    async def _read_lines(self, replies: MemoryObjectSendStream[Ticket]) -> None:
        limit = self.config.max_line_bytes
        tail = b""  # the start of a line whose `\n` has not come yet
        while True:
            self._push_idle_deadline()
            try:
                chunk = await self.stream.receive(RECEIVE_BYTES)
            except anyio.EndOfStream:
                if tail:  # hung up mid-line: that partial row is not written
                    logger.debug("client left mid-line (%d bytes dropped)", len(tail))
                return
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return
            end = chunk.rfind(b"\n") + 1
            if not end:
                tail += chunk
                if len(tail) > limit:
                    return await self._too_long(tail, replies)
                continue
            received = chunk if end == len(chunk) else chunk[:end]
            if tail:
                received = tail + received
            tail = chunk[end:]
            del chunk
            too_long = tail if len(tail) > limit else None
            if has_line_longer(received, limit):  # the lines before it are still answered
                lines = received.split(b"\n")
                cut = next(i for i, line in enumerate(lines) if len(line) > limit)
                too_long = lines[cut]
                self._received = [*self._batches(lines[:cut])]
            else:
                self._received = [received]  # the usual receive: one batch, not split
            del received
            while self._received:
                await self._submit(replies)
            if too_long is not None:
                return await self._too_long(too_long, replies)

    async def _too_long(self, line: bytes, replies: MemoryObjectSendStream[Ticket]) -> None:
        """Answer a line longer than the limit; the caller then closes the connection."""
        reason = f"line longer than {self.config.max_line_bytes} bytes; closing the connection"
        self._reject("limit", reason, line)
        ticket = Ticket(1, reply=failure("limit", reason))
        await self.inflight.acquire(ticket.nbytes, 1)
        self._send_ticket(ticket, replies)

    def _batches(self, lines: list[bytes]) -> Iterator[list[bytes]]:
        size = self._batch_rows
        return (lines[i : i + size] for i in range(0, len(lines), size))

    async def _submit(self, replies: MemoryObjectSendStream[Ticket]) -> None:
        """Take the oldest batch: its ticket in the reply queue, its rows in the writer's
        queue (only their stored lines are held while waiting)."""
        ticket, batch = self._take_next()
        try:
            await self.inflight.acquire(ticket.nbytes, ticket.rows)  # the client reads slowly
        except BaseException:  # unanswered: so must every later line be, to keep the order
            self._received.clear()
            raise
        if self._send_ticket(ticket, replies) and batch is not None:
            await self._enqueue(batch)

    def _take_received_nowait(self, replies: MemoryObjectSendStream[Ticket]) -> None:
        """On shutdown, whole lines already received are still taken (the writer drains them),
        without waiting: rows the full queue cannot take are answered `unavailable`, and from
        the first batch whose replies cannot be queued on, lines are left unanswered (the
        client writes them directly)."""
        while self._received:
            ticket, batch = self._take_next()
            if not self.inflight.try_acquire(ticket.nbytes, ticket.rows):
                return
            if not self._send_ticket(ticket, replies):
                return
            if batch is None:
                continue
            if not self.queue_budget.try_acquire(batch.nbytes, batch.rows):
                ticket.resolve_all(UNAVAILABLE_STOPPING)
                continue
            self._put(batch)

    def _take_next(self) -> tuple[Ticket, Batch | None]:
        """Validate the oldest received item: its ticket, answered at once, or with a queue
        item for the writer. A receive that is not accepted as sent, or holds more rows than
        a batch may, is cut into batches of lines first."""
        received = self._received.pop(0)
        if isinstance(received, bytes):
            batch, *rest = self._judge_receive(received)
            self._received[:0] = rest
        else:
            batch = received
        if isinstance(batch, AsSent):
            ticket = Ticket(batch.count, month=batch.month, waiter=self.waiter)
            return ticket, Batch({batch.month: (batch.payload, batch.count)}, ticket)
        return self._take(batch)

    def _judge_receive(self, received: bytes) -> list[list[bytes] | AsSent]:
        """A whole receive as one batch accepted as sent (the usual case), else its lines in
        batches of at most `_batch_rows` (already accepted, when only their number is the
        matter)."""
        accepted = self._acceptor.accept(received)
        if accepted is not None and accepted.count <= self._batch_rows:
            return [accepted]
        lines = received.split(b"\n")
        lines.pop()  # after the last `\n`
        if accepted is None:
            return [*self._batches(lines)]
        month = accepted.month
        return [AsSent(month, b"\n".join([*b, b""]), len(b)) for b in self._batches(lines)]

    def _take(self, lines: list[bytes]) -> tuple[Ticket, Batch | None]:
        """A batch of lines judged one by one: its ticket, and its rows' queue item if any."""
        verdicts = validate_lines(lines)
        count, months = len(lines), verdicts.months
        if verdicts.payload is not None:  # every row as sent, in one month
            month = months[0]
            assert month is not None
            ticket = Ticket(count, month=month, waiter=self.waiter)
            return ticket, Batch({month: (verdicts.payload, count)}, ticket)
        parts: list[bytes | str] = []
        groups: dict[str, list[bytes]] = {}
        for i, month in enumerate(months):
            if month is None:
                parts.append(self._refused(lines[i], verdicts.errors[i]))
            else:
                parts.append(month)
                groups.setdefault(month, []).append(verdicts.stored[i])
        if not groups:
            return Ticket(count, reply=b"".join(p for p in parts if isinstance(p, bytes))), None
        ticket = Ticket(count, parts=parts, waiter=self.waiter)
        payloads = {m: (b"\n".join([*group, b""]), len(group)) for m, group in groups.items()}
        return ticket, Batch(payloads, ticket)

    def _refused(self, line: bytes, error: str) -> bytes:
        """The reply to a line that is not a valid row: a control request's, or `invalid`."""
        if len(line) <= _MAX_CONTROL_LINE and b'"op"' in line:
            reply = self._control(line)
            if reply is not None:
                return reply
        self._reject("invalid", error, line)
        return failure("invalid", error)

    async def _enqueue(self, batch: Batch) -> None:
        try:
            await self.queue_budget.acquire(batch.nbytes, batch.rows)  # full: backpressure
        except BaseException:  # cancelled (shutdown, idle): the rows were not taken
            batch.ticket.resolve_all(UNAVAILABLE_STOPPING)
            raise
        self._put(batch)

    def _put(self, batch: Batch) -> None:
        try:
            self.queue.send_nowait(batch)  # unbounded in items: the budget was taken
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.queue_budget.release(batch.nbytes, batch.rows)
            batch.ticket.resolve_all(UNAVAILABLE_STOPPING)

    def _send_ticket(self, ticket: Ticket, replies: MemoryObjectSendStream[Ticket]) -> bool:
        """Queue a ticket for the reply task; False when it is gone (the client left)."""
        try:
            replies.send_nowait(ticket)  # unbounded in items: `self.inflight` was taken
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._received.clear()
            self.reading.cancel()
            return False
        return True

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
        if now - self._idle_pushed >= self._idle_every:
            self._idle_pushed = now
            self.reading.deadline = anyio.current_time() + self.config.idle_timeout

    async def _write_replies(
        self, tickets: MemoryObjectReceiveStream[Ticket], connection: anyio.CancelScope
    ) -> None:
        """Write answers in request order, many batches per socket write when they are ready."""
        answered: list[Ticket] = []
        async with tickets:
            while True:
                try:
                    ticket = tickets.receive_nowait()
                except anyio.WouldBlock:
                    if answered:
                        if not await self._flush(answered, connection):
                            return
                        continue
                    try:
                        ticket = await tickets.receive()
                    except anyio.EndOfStream:
                        break
                except anyio.EndOfStream:
                    break
                if ticket.reply is None:
                    if answered and not await self._flush(answered, connection):
                        return
                    await self.waiter.wait_for(ticket)
                answered.append(ticket)
                if len(answered) >= _MAX_BATCHES_PER_WRITE:
                    if not await self._flush(answered, connection):
                        return
        if answered:
            await self._flush(answered, connection)

    async def _flush(self, answered: list[Ticket], connection: anyio.CancelScope) -> bool:
        """Send the answered batches' replies; False (and the connection cancelled) if the
        client is gone or has not read anything for the idle timeout."""
        data = b"".join([ticket.reply for ticket in answered if ticket.reply is not None])
        nbytes = sum(ticket.nbytes for ticket in answered)
        rows = sum(ticket.rows for ticket in answered)
        answered.clear()
        try:  # what the socket takes now goes without a timer or a trip round the event loop
            data = data[self._socket.send(data) :]
        except BlockingIOError:
            pass
        except OSError:
            connection.cancel()
            return False
        if data and not await self._send_rest(data):
            connection.cancel()
            return False
        self.inflight.release(nbytes, rows)  # read (or in the kernel's hands): room for more
        return True

    async def _send_rest(self, data: bytes) -> bool:
        """Send what the socket did not take at once: False if the client is gone or has not
        read anything for the idle timeout."""
        with anyio.move_on_after(self.config.idle_timeout) as timeout:
            try:
                await self.stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return False
        if timeout.cancelled_caught:
            logger.info(
                "closing a connection that has not read its replies for %.0fs",
                self.config.idle_timeout,
            )
            return False
        return True
