"""The two daemon goals of issue 13 against the least any daemon could do here.

A minimal asyncio server on a Unix socket that, for each line, decodes and re-encodes it with
msgspec, writes and fsyncs it inline, and replies `{"ok":true}`: no queue, no writer task, no
thread, no lock, no checks of the data dir. Against it and `mantisd`, side by side (fresh data
dirs under `bench/data/`, removed afterwards):

- one client's append latency, row after row, with the direct write + fsync as the unit
  (issue 13: p50 at most 2x), interleaved rounds, the median of their p50s;
- rows/s with 16 pipelining clients (issue 13: 300,000), each a process, as `bench_daemon.py`;
- ack latency, 4 clients offering 2,000 rows/s in all (issue 13: p99 under 2 ms).

Three more minimal servers, the design-shaped floors, are measured the same way in the same
rounds: mantisd's shape (the event loop reads, one writer thread commits in groups, a row
answered after its fsync) with nothing else (`shaped_server`); the same with design.md's
writer task between the readers and the thread (`tasked_server`); and that one written with
anyio's streams and tasks, as mantisd is (`anyio_server`). Last, CPU only: what validating
a receive (`mantisd.batch.Acceptor`) and its bare msgspec part cost per row, in
one thread and in two at once (msgspec holds the GIL).

    .venv/bin/python bench/bench_floor.py [--rounds 6] [--rows 500] [--clients 16] [--calls 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import queue
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import msgspec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_daemon import (  # noqa: E402
    daemon,
    measure_latency,
    pct,
    pipelining_client,
    row_line,
    run_clients,
)

from mantisd.batch import Acceptor, LeanRow  # noqa: E402
from mantisd.daemon.replies import OK as OK_LINE  # noqa: E402


def floor_server(path: str, shard: str) -> None:
    """Serve until killed: each line decoded, encoded, written and fsynced, then answered."""
    fd = os.open(shard, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    decode, encode = msgspec.json.Decoder().decode, msgspec.json.Encoder().encode

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            os.write(fd, encode(decode(line)) + b"\n")
            os.fsync(fd)
            writer.write(OK_LINE)

    async def main() -> None:
        server = await asyncio.start_unix_server(handle, path, limit=1 << 24)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


Entry = tuple[bytes, asyncio.Transport, int]  # a receive's stored lines, whose, how many


def shaped_server(path: str, shard: str, writer_task: bool = False) -> None:
    """Serve until killed, as the least a daemon of mantisd's shape could: the event loop reads
    each connection and decodes and re-encodes every complete line of a receive with one
    `decode_lines` into mantisd's own `LeanRow` and one `encode_lines` (the msgspec part of
    mantisd's validation, nothing more), ONE writer thread commits (everything that arrived
    while its last fsync ran goes into its next write + fsync), and a row is answered only
    after its fsync. The reader is an `asyncio.Protocol` (no stream, no task per connection,
    never waits for the writer); the hand-offs are one `SimpleQueue.put` per receive and one
    `call_soon_threadsafe` per commit. `writer_task`: as design.md has it, the readers feed a
    queue that one writer task drains, handing each commit to the thread and answering its
    rows when the thread is done. No other check, no lock, no budget, no checks of the data
    dir: what such a daemon costs beyond `floor_server`'s inline fsync is the shape's own,
    not mantisd's."""
    fd = os.open(shard, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    decode_lines = msgspec.json.Decoder(LeanRow).decode_lines
    encode_lines = msgspec.json.Encoder().encode_lines
    #: to the thread: entries, and the future to settle (None: answer them from the thread)
    jobs: queue.SimpleQueue[tuple[list[Entry], asyncio.Future[None] | None]] = queue.SimpleQueue()
    pending: asyncio.Queue[Entry] = asyncio.Queue()

    def answer(entries: list[Entry]) -> None:
        for _, transport, rows in entries:
            transport.write(OK_LINE * rows)

    def settle(done: list[tuple[list[Entry], asyncio.Future[None] | None]]) -> None:
        for entries, future in done:
            if future is None:
                answer(entries)
            else:
                future.set_result(None)

    def commit(loop: asyncio.AbstractEventLoop) -> None:
        while True:
            done = [jobs.get()]
            while not jobs.empty():
                done.append(jobs.get_nowait())
            os.write(fd, b"".join(payload for entries, _ in done for payload, _, _ in entries))
            os.fsync(fd)
            loop.call_soon_threadsafe(settle, done)

    async def writer(loop: asyncio.AbstractEventLoop) -> None:
        while True:
            entries = [await pending.get()]
            while not pending.empty():
                entries.append(pending.get_nowait())
            future = loop.create_future()
            jobs.put((entries, future))
            await future
            answer(entries)

    class Reader(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport, self.partial = transport, b""

        def data_received(self, data: bytes) -> None:
            data = self.partial + data
            end = data.rfind(b"\n") + 1
            self.partial = data[end:]
            if end:
                rows = decode_lines(data[:end])
                entry = (encode_lines(rows), self.transport, len(rows))
                if writer_task:
                    pending.put_nowait(entry)
                else:
                    jobs.put(([entry], None))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        threading.Thread(target=commit, args=(loop,), daemon=True).start()
        task = asyncio.create_task(writer(loop)) if writer_task else None
        server = await loop.create_unix_server(Reader, path)
        async with server:
            await server.serve_forever()
        del task

    asyncio.run(main())


def tasked_server(path: str, shard: str) -> None:
    """`shaped_server` with design.md's writer task between the readers and the thread."""
    shaped_server(path, shard, writer_task=True)


def anyio_server(path: str, shard: str) -> None:
    """`tasked_server` written as mantisd is, on anyio: a task per connection reading its
    `SocketStream`, a memory object stream to the one writer task, the thread for the write +
    fsync, the replies sent by the writer task. What the design's own building blocks cost,
    with still none of mantisd's checks."""
    fd = os.open(shard, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    decode_lines = msgspec.json.Decoder(LeanRow).decode_lines
    encode_lines = msgspec.json.Encoder().encode_lines
    jobs: queue.SimpleQueue[tuple[bytes, asyncio.Future[None]]] = queue.SimpleQueue()
    Written = tuple[bytes, anyio.abc.SocketStream, int]

    def commit(loop: asyncio.AbstractEventLoop) -> None:
        while True:
            payload, future = jobs.get()
            os.write(fd, payload)
            os.fsync(fd)
            loop.call_soon_threadsafe(future.set_result, None)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        threading.Thread(target=commit, args=(loop,), daemon=True).start()
        send, receive = anyio.create_memory_object_stream[Written](math.inf)

        async def writer() -> None:
            async for entry in receive:
                entries = [entry]
                while True:
                    try:
                        entries.append(receive.receive_nowait())
                    except anyio.WouldBlock:
                        break
                future = loop.create_future()
                jobs.put((b"".join(payload for payload, _, _ in entries), future))
                await future
                for _, stream, rows in entries:
                    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                        await stream.send(OK_LINE * rows)

        async def handle(stream: anyio.abc.SocketStream) -> None:
            partial = b""
            async with stream:
                while True:
                    try:
                        data = partial + await stream.receive(1 << 18)
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
                    end = data.rfind(b"\n") + 1
                    partial = data[end:]
                    if end:
                        rows = decode_lines(data[:end])
                        send.send_nowait((encode_lines(rows), stream, len(rows)))

        listener = await anyio.create_unix_listener(path)
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            await listener.serve(handle, task_group=tg)

    anyio.run(main)


def start_server(target: Callable[[str, str], None], sock: str, shard: str) -> Any:
    """`target(sock, shard)` in a forked process, once its socket exists."""
    server = mp.get_context("fork").Process(target=target, args=(sock, shard), daemon=True)
    server.start()
    while not os.path.exists(sock):
        time.sleep(0.01)
    return server


def append_p50(sock_path: str, rows: int) -> float:
    """One connection, one row at a time: the median seconds from send to reply."""
    lines = [row_line(99, n) for n in range(rows)]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(sock_path)
        samples = []
        for line in lines:
            start = time.perf_counter()
            sock.sendall(line)
            reply = b""
            while not reply.endswith(b"\n"):
                reply += sock.recv(4096)
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def direct_p50(shard: Path, rows: int) -> float:
    """The unit: one write() + fsync per row on a file opened once."""
    fd = os.open(shard, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    samples = []
    try:
        for n in range(rows):
            line = row_line(98, n)
            start = time.perf_counter()
            os.write(fd, line)
            os.fsync(fd)
            samples.append(time.perf_counter() - start)
    finally:
        os.close(fd)
    return statistics.median(samples)


def validation_rates(calls: int) -> dict[str, tuple[float, float]]:
    """CPU only: rows/s of `Acceptor().accept` on a receive of 1,000 complete rows, and of its
    bare msgspec part (`decode_lines` into `LeanRow`, `encode_lines` back), in one thread and
    in two threads at once (each its own acceptor or codec, `calls` calls each)."""
    buffer = b"".join(row_line(97, n) for n in range(1000))

    def accept(calls: int) -> None:
        acceptor = Acceptor()
        for _ in range(calls):
            accepted = acceptor.accept(buffer)
            assert accepted is not None and accepted.count == 1000

    def codec(calls: int) -> None:
        decode_lines = msgspec.json.Decoder(LeanRow).decode_lines
        encode_lines = msgspec.json.Encoder().encode_lines
        for _ in range(calls):
            encode_lines(decode_lines(buffer))

    def rate(work: Callable[[int], None], threads: int) -> float:
        work(max(1, calls // 20))  # warm up
        runners = [threading.Thread(target=work, args=(calls,)) for _ in range(threads)]
        start = time.perf_counter()
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.join()
        return threads * calls * 1000 / (time.perf_counter() - start)

    codec_back = msgspec.json.Encoder().encode_lines(
        msgspec.json.Decoder(LeanRow).decode_lines(buffer)
    )
    assert codec_back == buffer, "row_line's rows are not LeanRow's canonical form"
    return {
        name: (rate(work, 1), rate(work, 2))
        for name, work in (("Acceptor().accept", accept), ("decode_lines + encode_lines", codec))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--rows", type=int, default=500, help="appends per latency round")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--total", type=int, default=160_000, help="rows per throughput run")
    parser.add_argument("--calls", type=int, default=300, help="validations of 1,000 rows")
    parser.add_argument("--ack-seconds", type=float, default=5.0, help="per ack-latency run")
    args = parser.parse_args()
    (HERE / "data").mkdir(exist_ok=True)
    names = ("floor", "shaped", "tasked", "anyio", "mantisd")
    with tempfile.TemporaryDirectory(dir=HERE / "data") as work_dir:
        work = Path(work_dir)
        socks = {name: str(work / f"{name}.sock") for name in names[:4]}
        servers = [
            start_server(target, socks[name], str(work / f"{name}.jsonl"))
            for name, target in (
                ("floor", floor_server),
                ("shaped", shaped_server),
                ("tasked", tasked_server),
                ("anyio", anyio_server),
            )
        ]
        p50s: dict[str, list[float]] = {name: [] for name in ("direct", *names)}
        rates: dict[str, list[float]] = {name: [] for name in names}
        acks: dict[str, list[float]] = {name: [] for name in names}
        try:
            with daemon(work) as (mantisd_sock, _):
                socks["mantisd"] = str(mantisd_sock)
                for _ in range(args.rounds):
                    p50s["direct"].append(direct_p50(work / "direct.jsonl", args.rows))
                    for name in names:
                        p50s[name].append(append_p50(socks[name], args.rows))
                for _ in range(max(1, args.rounds // 2)):
                    for name in names:
                        rate, _, failed = run_clients(
                            pipelining_client, socks[name], args.clients, args.total // args.clients
                        )
                        assert failed == 0, f"{name}: {failed} rows not acknowledged"
                        rates[name].append(rate)
                    for name in names:
                        acks[name] += measure_latency(Path(socks[name]), 2000.0, args.ack_seconds)
        finally:
            for server in servers:
                server.kill()
    validation = validation_rates(args.calls)
    unit = statistics.median(p50s["direct"])
    print(f"medians of {args.rounds} interleaved rounds ({args.rows} rows each); {os.cpu_count()}")
    print(f"CPUs; throughput: {args.clients} pipelining clients, medians of their runs;")
    print("ack: 4 clients offering 2,000 rows/s in all, each row sent alone\n")
    print(f"{'':34}{'append p50':>12}{'/ direct':>10}{'rows/s':>12}{'ack p50':>10}{'ack p99':>10}")
    print(f"{'direct write()+fsync per row':34}{unit * 1e3:>9.3f} ms{1:>9.2f}x")
    titles = (
        "minimal asyncio server",
        "design-shaped floor (loop+thread)",
        "  + a writer task",
        "  the same on anyio",
        "mantisd",
    )
    for name, title in zip(names, titles, strict=True):
        p50 = statistics.median(p50s[name])
        rate = statistics.median(rates[name])
        ack = f"{pct(acks[name], 50):>7.2f} ms{pct(acks[name], 99):>7.2f} ms"
        print(f"{title:34}{p50 * 1e3:>9.3f} ms{p50 / unit:>9.2f}x{rate:>12,.0f}{ack}")
    print(f"\nCPU only, a receive of 1,000 rows, {args.calls} calls per thread:")
    print(f"{'':34}{'1 thread':>23}{'2 threads, in all':>25}")
    for title, (one, two) in validation.items():
        cells = [f"{1e6 / rate:>7.2f} us/row{rate:>9,.0f}/s" for rate in (one, two)]
        print(f"{title:34}{cells[0]}  {cells[1]}")


if __name__ == "__main__":
    main()
