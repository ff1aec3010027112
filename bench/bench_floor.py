"""The two daemon goals of issue 13 against the least any daemon could do here.

A minimal asyncio server on a Unix socket that, for each line, decodes and re-encodes it with
msgspec, writes and fsyncs it inline, and replies `{"ok":true}`: no queue, no writer task, no
thread, no lock, no checks of the data dir. Against it and `mantisd`, side by side (fresh data
dirs under `bench/data/`, removed afterwards):

- one client's append latency, row after row, with the direct write + fsync as the unit
  (issue 13: p50 at most 2x), interleaved rounds, the median of their p50s;
- rows/s with 16 pipelining clients (issue 13: 300,000), each a process, as `bench_daemon.py`.

    .venv/bin/python bench/bench_floor.py [--rounds 6] [--rows 500] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_daemon import daemon, pipelining_client, row_line, run_clients  # noqa: E402


def floor_server(path: str, shard: str) -> None:
    """Serve until killed: each line decoded, encoded, written and fsynced, then answered."""
    fd = os.open(shard, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    decode, encode = msgspec.json.Decoder().decode, msgspec.json.Encoder().encode

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            os.write(fd, encode(decode(line)) + b"\n")
            os.fsync(fd)
            writer.write(b'{"ok":true}\n')

    async def main() -> None:
        server = await asyncio.start_unix_server(handle, path, limit=1 << 24)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--rows", type=int, default=500, help="appends per latency round")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--total", type=int, default=160_000, help="rows per throughput run")
    args = parser.parse_args()
    (HERE / "data").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=HERE / "data") as work_dir:
        work = Path(work_dir)
        floor_sock = str(work / "floor.sock")
        server = mp.get_context("fork").Process(
            target=floor_server, args=(floor_sock, str(work / "floor.jsonl")), daemon=True
        )
        server.start()
        while not os.path.exists(floor_sock):
            time.sleep(0.01)
        p50s: dict[str, list[float]] = {"direct": [], "floor": [], "mantisd": []}
        rates: dict[str, list[float]] = {"floor": [], "mantisd": []}
        try:
            with daemon(work) as (mantisd_sock, _):
                for _ in range(args.rounds):
                    p50s["direct"].append(direct_p50(work / "direct.jsonl", args.rows))
                    p50s["floor"].append(append_p50(floor_sock, args.rows))
                    p50s["mantisd"].append(append_p50(str(mantisd_sock), args.rows))
                for _ in range(max(1, args.rounds // 2)):
                    for name, target in (("floor", floor_sock), ("mantisd", str(mantisd_sock))):
                        rate, _, failed = run_clients(
                            pipelining_client, target, args.clients, args.total // args.clients
                        )
                        assert failed == 0, f"{name}: {failed} rows not acknowledged"
                        rates[name].append(rate)
        finally:
            server.kill()
    unit = statistics.median(p50s["direct"])
    print(f"medians of {args.rounds} interleaved rounds ({args.rows} rows each); {os.cpu_count()}")
    print(f"CPUs; throughput: {args.clients} pipelining clients, medians of their runs\n")
    print(f"{'':34}{'append p50':>12}{'/ direct':>10}{'rows/s':>12}")
    print(f"{'direct write()+fsync per row':34}{unit * 1e3:>9.3f} ms{1:>9.2f}x")
    for name, title in (("floor", "minimal asyncio server"), ("mantisd", "mantisd")):
        p50 = statistics.median(p50s[name])
        rate = statistics.median(rates[name])
        print(f"{title:34}{p50 * 1e3:>9.3f} ms{p50 / unit:>9.2f}x{rate:>12,.0f}")


if __name__ == "__main__":
    main()
