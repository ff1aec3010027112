"""What the benchmark scripts share: best-of timing and an emulated slower disk."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

_UNDER_STRACE = "MANTIS_BENCH_UNDER_STRACE"


def best_of(repeat: int, action: Callable[[], object]) -> float:
    """The fastest of `repeat` wall-clock runs of `action`, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def reexec_with_slow_fsync(delay_ms: float) -> None:
    """Run this script again under strace with every fsync delayed by `delay_ms` (a slower
    disk, for every process it starts too); returns at once when there is nothing to do."""
    if not delay_ms or os.environ.get(_UNDER_STRACE):
        return
    strace = ["strace", "-f", "--seccomp-bpf", "-qq", "-o", "/dev/null"]
    strace += ["-e", "trace=fsync,fdatasync"]
    strace += ["-e", f"inject=fsync,fdatasync:delay_exit={round(delay_ms * 1000)}"]
    os.execvpe("strace", [*strace, sys.executable, *sys.argv], {**os.environ, _UNDER_STRACE: "1"})
