"""Per-call latency of `mantis_client.append`: daemon healthy, absent and hung, side by side with
the floor of a direct write (one `write()` + `fsync` on an already open shard).

Targets (issue 4): healthy p50 within 2x of the direct write; absent p99 under 5 ms.

    .venv/bin/python bench/bench_client.py [--rows 2000] [--hung-rows 20] [--hung-timeout 0.2]
                                           [--fsync-delay-ms 2]
    .venv/bin/python bench/bench_client.py --source /tmp/before [--rounds 8]

`--source` compares the healthy path with another checkout's daemon instead: the direct write,
this daemon and that one in turn, `--rounds` times (`--rows` calls each), every figure the
median of the rounds' p50 (a shared machine's load moves between rounds, not within one).

`--fsync-delay-ms` emulates a slower disk than this machine's (whose fsync may be a write-back
cache's 0.2 ms): the run is re-executed under strace, which adds the delay after every fsync
of this process and of the daemon alike (seccomp-filtered, so other syscalls run untraced).
Data goes to a temporary directory under `bench/data/` (git-ignored), sockets under /tmp.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.rows, the runtime-like row factory

from benchlib import reexec_with_slow_fsync  # noqa: E402

from mantis_client import Client, Outcome  # noqa: E402
from mantisd.schema import validate  # noqa: E402
from tests.rows import make_row  # noqa: E402


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds (inclusive linear interpolation, as `mantis runs stats`)."""
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1e3, cuts[98] * 1e3


def measure(call: Callable[[], object], rows: int) -> list[float]:
    samples = []
    for _ in range(rows):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def bench_direct(data_dir: Path, rows: int) -> list[float]:
    """The baseline: one `write()` + `fsync` per row on a shard opened once with O_APPEND."""
    data_dir.mkdir(parents=True)
    fd = os.open(data_dir / "direct.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o660)
    try:

        def write_one() -> None:
            os.write(fd, validate(make_row()).line)
            os.fsync(fd)

        return measure(write_one, rows)
    finally:
        os.close(fd)


def bench_status_round_trip(socket_path: Path, rows: int) -> tuple[list[float], float | None]:
    """A control request's round trip (no fsync), and the daemon's own fsync p50 in ms."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(socket_path))
        replies: list[bytes] = []

        def status() -> None:
            sock.sendall(b'{"op":"status"}\n')
            reply = b""
            while not reply.endswith(b"\n"):
                reply += sock.recv(65536)
            replies.append(reply)

        samples = measure(status, rows)
    fsync_p50: float | None = json.loads(replies[-1])["status"].get("fsync_p50_ms")
    return samples, fsync_p50


def bench_client(socket_path: Path, data_dir: Path, rows: int, timeout: float) -> list[float]:
    """One `Client` (one connection) appending `rows` rows one after another."""
    outcomes: set[Outcome] = set()
    with Client(socket_path=socket_path, data_dir=data_dir, timeout=timeout) as client:
        samples = measure(lambda: outcomes.add(client.append(make_row()).outcome), rows)
    print(f"  ({', '.join(sorted(o.value for o in outcomes))})", file=sys.stderr)
    return samples


@contextmanager
def running_daemon(socket_path: Path, data_dir: Path, source: Path = ROOT) -> Iterator[None]:
    """A real `mantisd` (the one in `source`) on `socket_path`, ready when it says so."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mantisd.daemon", "--socket", str(socket_path)]
        + ["--data-dir", str(data_dir)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=source,  # `-m` imports `mantisd` from there first
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "ready" in line:
                break
        else:
            raise RuntimeError(f"mantisd exited with {proc.wait()} before it was ready")
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe empty
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def hung_daemon(socket_path: Path) -> Iterator[None]:
    """Accepts connections and never answers (a daemon stuck in a dead disk, say)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(64)
    held: list[socket.socket] = []

    def accept_forever() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_forever, daemon=True).start()
    try:
        yield
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        for conn in held:
            conn.close()


def healthy_side_by_side(base: Path, sock_dir: Path, source: Path, rows: int, rounds: int) -> None:
    """The healthy path against another checkout's daemon, interleaved with the direct write."""
    p50s: dict[str, list[float]] = {"direct write()+fsync": [], "this daemon": [], str(source): []}
    with (
        running_daemon(sock_dir / "a.sock", base / "a"),
        running_daemon(sock_dir / "b.sock", base / "b", source),
    ):
        for n in range(rounds):
            p50s["direct write()+fsync"].append(
                percentiles(bench_direct(base / f"direct-{n}", rows))[0]
            )
            for name, sock in (("this daemon", "a.sock"), (str(source), "b.sock")):
                samples = bench_client(sock_dir / sock, base / f"client-{n}", rows, timeout=1.0)
                p50s[name].append(percentiles(samples)[0])
    direct = statistics.median(p50s["direct write()+fsync"])
    print(f"healthy append p50, median of {rounds} interleaved rounds of {rows} calls:")
    for name, values in p50s.items():
        p50 = statistics.median(values)
        spread = f"{min(values):.3f}-{max(values):.3f}"
        print(f"  {name:<36} {p50:>7.3f} ms  ({spread})  {p50 / direct:>5.2f}x the direct write")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="appends per healthy/absent run")
    parser.add_argument("--hung-rows", type=int, default=20, help="appends against the hung one")
    parser.add_argument("--hung-timeout", type=float, default=0.2, help="client timeout (s)")
    parser.add_argument("--fsync-delay-ms", type=float, default=0.0, help="slow every fsync")
    parser.add_argument("--source", type=Path, help="compare with this checkout's daemon")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (--source)")
    args = parser.parse_args()
    reexec_with_slow_fsync(args.fsync_delay_ms)

    (ROOT / "bench" / "data").mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(dir=ROOT / "bench" / "data") as work,
        tempfile.TemporaryDirectory(prefix="mtb-", dir="/tmp") as sockets,
    ):
        base, sock_dir = Path(work), Path(sockets)
        if args.source:
            healthy_side_by_side(base, sock_dir, args.source.resolve(), args.rows, args.rounds)
            return
        results: dict[str, list[float]] = {}
        print("direct write + fsync ...", file=sys.stderr)
        results["direct write()+fsync"] = bench_direct(base / "direct", args.rows)
        print("daemon healthy ...", file=sys.stderr)
        with running_daemon(sock_dir / "up.sock", base / "daemon"):
            results["append, daemon healthy"] = bench_client(
                sock_dir / "up.sock", base / "client-up", args.rows, timeout=1.0
            )
            results["  daemon round trip, no fsync"], fsync_p50 = bench_status_round_trip(
                sock_dir / "up.sock", args.rows
            )
        print("daemon absent ...", file=sys.stderr)
        results["append, daemon absent"] = bench_client(
            sock_dir / "absent.sock", base / "client-absent", args.rows, timeout=1.0
        )
        print(f"daemon hung (timeout {args.hung_timeout} s) ...", file=sys.stderr)
        with hung_daemon(sock_dir / "hung.sock"):
            results[f"append, daemon hung (timeout {args.hung_timeout:g} s)"] = bench_client(
                sock_dir / "hung.sock", base / "client-hung", args.hung_rows, args.hung_timeout
            )

    direct_p50, _ = percentiles(results["direct write()+fsync"])
    print(f"{'path':<38} {'calls':>6} {'p50 ms':>9} {'p99 ms':>9} {'p50/direct':>11}")
    for name, samples in results.items():
        p50, p99 = percentiles(samples)
        print(f"{name:<38} {len(samples):>6} {p50:>9.3f} {p99:>9.3f} {p50 / direct_p50:>10.2f}x")
    print(f"(the daemon's own fsync p50 during the healthy run: {fsync_p50} ms", end="")
    print(f"; every fsync slowed by {args.fsync_delay_ms:g} ms)" if args.fsync_delay_ms else ")")


if __name__ == "__main__":
    main()
