"""`fan_out`: results in order, a failed worker's items computed again, children reaped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from mantisd.stats.fanout import fan_out


def reaped(pids: set[int]) -> bool:
    """True when none of `pids` exists any more (not even as a zombie)."""
    for pid in pids - {os.getpid()}:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        return False
    return True


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_results_come_in_item_order(workers: int) -> None:
    results = list(fan_out(lambda i: (i, i * i, os.getpid()), range(11), workers=workers))
    assert [r[:2] for r in results] == [(i, i * i) for i in range(11)]
    assert reaped({r[2] for r in results})


def test_work_runs_in_children() -> None:
    parent = os.getpid()
    pids = list(fan_out(lambda _: os.getpid(), range(4), workers=2))
    assert parent not in pids and len(set(pids)) == 2


def test_an_item_that_fails_in_a_worker_is_computed_here() -> None:
    parent = os.getpid()

    def work(i: int) -> tuple[int, bool]:
        if i == 2 and os.getpid() != parent:
            raise RuntimeError("only in the child")
        return i, os.getpid() == parent

    assert list(fan_out(work, range(5), workers=2)) == [
        (0, False),
        (1, False),
        (2, True),
        (3, False),
        (4, False),
    ]


def test_an_error_here_propagates() -> None:
    def work(i: int) -> int:
        raise ValueError(f"bad item {i}")

    with pytest.raises(ValueError, match="bad item 0"):
        list(fan_out(work, range(3), workers=2))


def test_closing_early_ends_the_workers() -> None:
    results = fan_out(lambda i: os.getpid(), range(1000), workers=2)
    first = next(results)
    assert first != os.getpid()
    results.close()
    assert reaped({first})


def test_a_threaded_process_is_not_forked() -> None:
    parent = os.getpid()
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        pids = set(fan_out(lambda _: os.getpid(), range(4), workers=2))
    finally:
        release.set()
        thread.join()
    assert pids == {parent}


HOST_PROGRAM = """
import signal, sys
from mantisd.stats.fanout import fan_out
if sys.argv[1] == "sigterm-handler":
    signal.signal(signal.SIGTERM, lambda *_: None)  # the host's own handler, inherited
    results = fan_out(lambda i: b"x" * 200_000, range(20), workers=2)  # > a pipe's worth
    next(results)
    results.close()  # stop early: the workers must end
    print("closed")
else:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps children itself
    print(sum(fan_out(lambda i: i * i, range(10), workers=2)))
"""


@pytest.mark.parametrize(
    ("host", "expected"), [("sigterm-handler", "closed"), ("sigchld-ignored", "285")]
)
def test_workers_end_whatever_the_host_program_did_with_signals(host: str, expected: str) -> None:
    """A host that catches SIGTERM (children inherit it) or ignores SIGCHLD: no hang, no
    ChildProcessError, the same results."""
    proc = subprocess.run(
        [sys.executable, "-c", HOST_PROGRAM, host], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [expected]


def test_a_worker_killed_by_a_signal_has_its_items_computed_here() -> None:
    parent = os.getpid()

    def work(i: int) -> tuple[int, bool]:
        if i == 3 and os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return i, os.getpid() == parent

    results = list(fan_out(work, range(6), workers=2))
    assert [i for i, _ in results] == list(range(6))
    assert results[3] == (3, True)  # recomputed in the parent, in order
