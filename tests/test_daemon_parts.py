"""The daemon's small stdlib-level parts, on real files and sockets (no daemon process)."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from mantisd.daemon import fs, logs, notify, rejected


def test_network_filesystem_is_detected(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "40 22 0:35 / /mnt/shared\\040data rw shared:20 - nfs4 srv:/export rw,vers=4.2\n"
    )
    assert fs.filesystem_type(Path("/mnt/shared data/x/runs_log"), str(mountinfo)) == "nfs4"
    assert fs.filesystem_type(Path("/mnt/sharedother"), str(mountinfo)) == "ext4"
    assert fs.filesystem_type(tmp_path) is not None  # this machine's real mountinfo
    assert fs.network_filesystem(tmp_path) is None


def test_journal_stream_detection_and_priorities(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert logs.stderr_is_journal()
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    assert not logs.stderr_is_journal()
    formatter = logs.JournalFormatter("%(message)s")
    record = logging.LogRecord("mantisd", logging.ERROR, __file__, 1, "disk %s", ("full",), None)
    assert formatter.format(record) == "<3>disk full"


@pytest.mark.parametrize("abstract", [False, True])
def test_notifier_sends_datagrams(tmp_path: Path, abstract: bool) -> None:
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = f"@mt-notify-{os.getpid()}" if abstract else str(tmp_path / "n")
    receiver.bind("\0" + address[1:] if abstract else address)
    receiver.settimeout(5)
    with receiver:
        notifier = notify.Notifier({"NOTIFY_SOCKET": address})
        notifier.ready("serving")
        assert receiver.recv(1024).decode().split("\n")[:2] == ["READY=1", "STATUS=serving"]
        notifier.watchdog()
        assert receiver.recv(1024) == b"WATCHDOG=1"
        notifier.close()
    silent = notify.Notifier({})
    assert not silent.enabled
    silent.ready("nobody listens")  # a no-op, not an error


def test_watchdog_interval() -> None:
    assert notify.watchdog_interval({"WATCHDOG_USEC": "3000000"}) == 3.0
    assert notify.watchdog_interval({}) is None
    assert notify.watchdog_interval({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}) is None


async def test_rejections_are_queued_in_memory_bounded_and_written_by_flush(
    tmp_path: Path,
) -> None:
    """`record` runs on the event loop: it never touches the disk (a hung volume would stall
    every connection) and never holds more than `MAX_PENDING_BYTES`; `flush` writes."""
    log = rejected.RejectedLog(tmp_path, max_bytes=1 << 30)
    line = b"x" * rejected.MAX_KEPT_LINE
    for _ in range(2 * rejected.MAX_PENDING_BYTES // len(line)):
        log.record("invalid", "row: expected a JSON object", line)
    assert not (tmp_path / "runs_log").exists()
    assert log.dropped > 0
    await log.flush()
    written = (tmp_path / "runs_log" / "rejected" / "rejected.jsonl").read_bytes()
    assert 0 < len(written) <= rejected.MAX_PENDING_BYTES
    assert written.count(b"\n") + log.dropped == 2 * rejected.MAX_PENDING_BYTES // len(line)


def test_the_status_latencies_are_sorted_again_only_after_a_commit() -> None:
    """A client pipelining thousands of `{"op":"status"}` once made the event loop sort the
    latency window for each one (0.8 ms apiece), and other clients' appends timed out."""
    from mantisd.daemon.status import Counters

    counters = Counters(latency_window=1000)
    counters.commit_seconds.extend([0.001] * 999 + [0.5])
    counters.batches = 1
    first = counters.snapshot(queue_depth=0, writer_busy=False)
    assert (first["fsync_p50_ms"], first["fsync_p99_ms"]) == (1.0, 1.0)
    counters.commit_seconds.extend([0.5] * 1000)  # not counted as a commit: not looked at
    assert counters.snapshot(queue_depth=0, writer_busy=False)["fsync_p50_ms"] == 1.0
    counters.batches = 2  # a commit: the window is read again
    assert counters.snapshot(queue_depth=0, writer_busy=False)["fsync_p50_ms"] == 500.0
