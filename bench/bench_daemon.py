"""mantisd throughput, ack latency and memory, side by side with the page's direct append.

    .venv/bin/python bench/bench_daemon.py [--quick] [--repeat 3] [--rss-seconds 60]
                                           [--fsync-delay-ms 2] [--source DIR ...]
                                           [--clients 1 4 16]

1. Durable rows/s with 1, 4 and 16 concurrent clients (separate processes), the median of
   `--repeat` runs, daemon and baseline runs interleaved. Each mantisd client pipelines with
   a window of 256 unanswered rows; each baseline client appends directly, one `write()` +
   `fsync` per row on its own O_APPEND descriptor (the page's writer). Beside each figure:
   the daemon's CPU per row (its event-loop thread / its other threads), which says where
   the time goes when the machine's 2 cores are the limit.
2. Ack latency p50/p99 at a steady offered load of 2,000 rows/s (4 clients x 500 rows/s, each
   row sent on its own, timed from send to its reply).
3. Daemon RSS (VmRSS, sampled every second) under sustained pipelined load for 60 s (10 s with
   --quick).

Targets (issue 13): >= 300,000 rows/s at 16 clients and >= 10x the baseline at 1, 4 and 16
clients; ack p99 < 2 ms at 2,000 rows/s; RSS flat over a minute.

`--source DIR` also runs the daemon of another checkout (a directory holding `mantisd/`, e.g.
`git worktree add /tmp/before HEAD~1`, or `git archive HEAD mantisd | tar -x -C /tmp/before`)
in the same rounds, as one more column: a before/after comparison on the same noisy machine.

`--fsync-delay-ms` emulates a slower disk than this machine's (whose fsync is a write-back
cache's ~0.2 ms): the run is re-executed under strace, which delays every fsync of the daemon
and of the direct writers alike (seccomp-filtered, so other syscalls run untraced).

Rows are about 600 bytes. Data goes to a temporary directory under `bench/data/` (git-ignored,
removed afterwards); sockets under /tmp.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

ROOT = Path(__file__).resolve().parent.parent
BENCH_DATA = ROOT / "bench" / "data"
WINDOW = 256
OK_LINE = b'{"ok":true}\n'

sys.path.insert(0, str(ROOT))
from benchlib import reexec_with_slow_fsync  # noqa: E402

from mantisd.schema import BUCKETS  # noqa: E402


def row_line(client: int, n: int) -> bytes:
    """A realistic ~600-byte row, finished now."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    row = {
        "schema_version": 1,
        "run_id": f"20260513_180527_{client:04x}{n:08x}",
        "tenant_id": "default",
        "profile_id": "default__alice-prod",
        "workflow_id": "default__marketplace-listings-v1",
        "plan_signature": "a1b2c3d4e5f6",
        "model": "Hcompany/Holo3-35B-A3B",
        "status": "succeeded",
        "created_at": now,
        "finished_at": now,
        "total_time_s": 247.25,
        "wall_time_breakdown": {b: 12.5 + i for i, b in enumerate(BUCKETS)},
        "cost_breakdown": {"usd": 0.1234, "input_tokens": 123456, "output_tokens": 4567},
        "steps_executed": 12,
        "viable": 3,
        "error": None,
    }  # fmt: skip
    return msgspec.json.encode(row) + b"\n"


# --- the daemon --------------------------------------------------------------------------


@contextmanager
def daemon(workdir: Path, source: Path = ROOT) -> Iterator[tuple[Path, int]]:
    """A real mantisd (the one in `source`) on a fresh data dir; yields (socket, pid)."""
    sock_dir = Path(tempfile.mkdtemp(prefix="mtb-", dir="/tmp"))
    path = sock_dir / "m.sock"
    data_dir = workdir / f"daemon-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mantisd.daemon", "--socket", str(path), "--data-dir",
         str(data_dir), "--log-level", "warning"],
        stderr=subprocess.PIPE,
        cwd=source,  # `-m` imports `mantisd` from there first
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    match = re.search(r"ready on .* pid (\d+)\)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"mantisd did not start: {line}{proc.stderr.read().decode()}")
    drain = threading.Thread(target=proc.stderr.read, daemon=True)
    drain.start()
    try:
        yield path, int(match[1])
    finally:
        proc.terminate()
        code = proc.wait(60)
        shutil.rmtree(sock_dir, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)
        if code != 0:
            print(f"warning: mantisd exited with {code}", file=sys.stderr)


# --- clients (each in its own process) -----------------------------------------------------


def pipelining_client(
    path: str, client: int, rows: int, barrier: Any, results: Any, stop_at: float | None = None
) -> None:
    """Send `rows` rows (or until `stop_at`) keeping up to WINDOW unanswered; count acks."""
    lines = [row_line(client, n) for n in range(min(rows, 4096))]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    barrier.wait()
    start = time.perf_counter()
    sent = acked = failed = 0
    pending = b""
    while acked + failed < rows:
        if stop_at is not None and time.time() >= stop_at and sent == acked + failed:
            break
        room = min(WINDOW - (sent - acked - failed), rows - sent)
        if room > 0 and (stop_at is None or time.time() < stop_at):
            sock.sendall(b"".join(lines[(sent + i) % len(lines)] for i in range(room)))
            sent += room
        data = pending + sock.recv(1 << 16)
        complete = data.rfind(b"\n") + 1
        pending = data[complete:]
        got = data[:complete].count(b"\n")
        ok = data[:complete].count(OK_LINE)
        acked += ok
        failed += got - ok
    elapsed = time.perf_counter() - start
    sock.close()
    results.put((start, start + elapsed, acked, failed))


def direct_client(
    shard: str, client: int, rows: int, barrier: Any, results: Any, stop_at: float | None = None
) -> None:
    """The page's writer: one write() + fsync per row on an O_APPEND descriptor."""
    lines = [row_line(client, n) for n in range(rows)]
    fd = os.open(shard, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o660)
    barrier.wait()
    start = time.perf_counter()
    for line in lines:
        os.write(fd, line)
        os.fsync(fd)
    elapsed = time.perf_counter() - start
    os.close(fd)
    results.put((start, start + elapsed, rows, 0))


def run_clients(target: Any, arg: str, clients: int, rows_each: int) -> tuple[float, int, int]:
    """Start `clients` processes at once; returns (rows/s, acked, failed)."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(clients)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(arg, c, rows_each, barrier, results))
        for c in range(clients)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    start = min(o[0] for o in outcomes)
    end = max(o[1] for o in outcomes)
    acked = sum(o[2] for o in outcomes)
    failed = sum(o[3] for o in outcomes)
    return acked / (end - start), acked, failed


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of `pid`."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a worker thread that just ended
            continue
        seconds[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


class Throughput(NamedTuple):
    rows_per_s: float
    main_us: float  # the daemon's event-loop thread, CPU microseconds per row
    other_us: float  # its other threads (the writer's appends and fsyncs)


def daemon_throughput(workdir: Path, source: Path, clients: int, total: int) -> Throughput:
    """Rows/s of a fresh daemon under `clients` pipelining clients, and its CPU per row."""
    with daemon(workdir, source) as (path, pid):
        before = thread_cpu(pid)
        rate, acked, failed = run_clients(pipelining_client, str(path), clients, total // clients)
        after = thread_cpu(pid)
    assert failed == 0, f"{failed} rows not acknowledged"
    main = after[pid] - before.get(pid, 0.0)
    other = sum(t - before.get(tid, 0.0) for tid, t in after.items() if tid != pid)
    return Throughput(rate, main / acked * 1e6, other / acked * 1e6)


def direct_throughput(workdir: Path, clients: int, total: int) -> float:
    shard = workdir / f"direct-{clients}.jsonl"
    rate, _, _ = run_clients(direct_client, str(shard), clients, total // clients)
    shard.unlink()
    return rate


# --- latency at a steady offered load ------------------------------------------------------


def steady_client(path: str, client: int, rate: float, seconds: float, results: Any) -> None:
    """Offer `rate` rows/s, each row sent on its own; time each until its reply."""
    lines = [row_line(client + 100, n) for n in range(int(rate * seconds) + 1)]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    sent_at: list[float] = []
    latencies: list[float] = []
    pending = b""
    start = time.perf_counter()
    total = len(lines)
    while len(latencies) < total:
        now = time.perf_counter()
        due = min(total, int((now - start) * rate) + 1)
        while len(sent_at) < due:
            sock.sendall(lines[len(sent_at)])
            sent_at.append(time.perf_counter())
        next_send = start + len(sent_at) / rate
        timeout = max(0.0, next_send - time.perf_counter()) if len(sent_at) < total else 1.0
        if selector.select(timeout):
            data = pending + sock.recv(1 << 16)
            received = time.perf_counter()
            complete = data.rfind(b"\n") + 1
            pending = data[complete:]
            for _ in range(data[:complete].count(b"\n")):
                latencies.append(received - sent_at[len(latencies)])
    sock.close()
    results.put(latencies)


def measure_latency(path: Path, rate: float, seconds: float, clients: int = 4) -> list[float]:
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=steady_client, args=(str(path), c, rate / clients, seconds, results))
        for c in range(clients)
    ]
    for p in procs:
        p.start()
    samples = [s for _ in procs for s in results.get(timeout=seconds + 120)]
    for p in procs:
        p.join()
    return samples


# --- memory under sustained load -----------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def measure_rss(path: Path, pid: int, seconds: float, clients: int = 4) -> tuple[list[int], int]:
    """Sample VmRSS every second while `clients` pipeline rows for `seconds`."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(clients + 1)
    results = ctx.Queue()
    stop_at = time.time() + seconds + 0.5
    procs = [
        ctx.Process(target=pipelining_client, args=(str(path), c, 10**9, barrier, results, stop_at))
        for c in range(clients)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    samples = []
    for _ in range(int(seconds)):
        time.sleep(1.0)
        samples.append(rss_kib(pid))
    acked = sum(results.get(timeout=120)[2] for _ in procs)
    for p in procs:
        p.join()
    return samples, acked


# --- report --------------------------------------------------------------------------------


def pct(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (RSS over 10 s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per throughput figure")
    parser.add_argument("--rss-seconds", type=float, default=None)
    parser.add_argument("--latency-seconds", type=float, default=None)
    parser.add_argument("--fsync-delay-ms", type=float, default=0.0, help="slow every fsync")
    parser.add_argument(
        "--source", type=Path, action="append", default=[], help="another checkout's daemon too"
    )
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 4, 16], help="client counts to measure"
    )
    args = parser.parse_args()
    reexec_with_slow_fsync(args.fsync_delay_ms)
    rss_seconds = args.rss_seconds or (10.0 if args.quick else 60.0)
    latency_seconds = args.latency_seconds or (5.0 if args.quick else 15.0)
    scale = 0.5 if args.quick else 1.0
    sources = [ROOT, *(s.resolve() for s in args.source)]

    BENCH_DATA.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-daemon-", dir=BENCH_DATA))
    delay = f"; every fsync slowed by {args.fsync_delay_ms:g} ms" if args.fsync_delay_ms else ""
    print(f"rows of {len(row_line(0, 0))} bytes; {os.cpu_count()} cores{delay}; data in {workdir}")
    print(f"medians of {args.repeat} interleaved runs; daemons: " + ", ".join(map(str, sources)))
    try:
        columns = "".join(f"   mantisd #{i} [CPU us/row]" for i in range(len(sources)))
        print(f"\ndurable rows/s {columns}   direct write+fsync/row   #0 / direct")
        for clients in args.clients:
            total = int(80_000 * scale) if clients > 1 else int(40_000 * scale)
            direct_total = int(min(8000, 2000 * clients) * scale)
            ours: list[list[Throughput]] = [[] for _ in sources]
            theirs: list[float] = []
            for _ in range(args.repeat):
                for i, source in enumerate(sources):
                    ours[i].append(daemon_throughput(workdir, source, clients, total))
                theirs.append(direct_throughput(workdir, clients, direct_total))
            cells = []
            for runs in ours:
                rate = statistics.median(r.rows_per_s for r in runs)
                main_us = statistics.median(r.main_us for r in runs)
                other_us = statistics.median(r.other_us for r in runs)
                cells.append(f"{rate:>12,.0f} [{main_us:4.1f} + {other_us:3.1f}]")
            direct = statistics.median(theirs)
            first = statistics.median(r.rows_per_s for r in ours[0])
            print(
                f"  {clients:2d} client(s) {''.join(cells)}{direct:16,.0f} rows/s"
                f"   {first / direct:8.1f}x"
            )

        print()
        for i, source in enumerate(sources):
            with daemon(workdir, source) as (path, _):
                samples = measure_latency(path, 2000.0, latency_seconds)
            print(
                f"mantisd #{i}: ack latency at 2,000 rows/s offered (4 clients, "
                f"{len(samples)} rows): p50 {pct(samples, 50):.2f} ms, "
                f"p99 {pct(samples, 99):.2f} ms, max {max(samples) * 1e3:.2f} ms"
            )
        with daemon(workdir) as (path, pid):
            rss, acked = measure_rss(path, pid, rss_seconds)
            tenth = max(1, len(rss) // 10)
            print(
                f"mantisd #0: RSS over {rss_seconds:.0f} s of load (4 pipelining clients, "
                f"{acked / rss_seconds:,.0f} rows/s): first {rss[0] / 1024:.1f} MB, "
                f"max {max(rss) / 1024:.1f} MB, last {rss[-1] / 1024:.1f} MB, "
                f"mean of first/last 10%: {statistics.mean(rss[:tenth]) / 1024:.1f} / "
                f"{statistics.mean(rss[-tenth:]) / 1024:.1f} MB"
            )
            print("  samples (MB): " + " ".join(f"{s / 1024:.1f}" for s in rss))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
