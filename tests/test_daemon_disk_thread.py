"""`mantisd.daemon.disk_thread.DiskThread`: the writer's blocking calls on one thread of its own."""

from __future__ import annotations

import threading

import anyio
import pytest

from mantisd.daemon.disk_thread import DiskThread


def threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


async def test_calls_run_in_order_on_one_thread_off_the_event_loop() -> None:
    disk = DiskThread("test-disk-order")
    ran: list[tuple[int, int]] = []

    def call(n: int) -> int:
        ran.append((n, threading.get_ident()))
        return n * n

    results: dict[int, int] = {}

    async def submit(n: int) -> None:
        results[n] = await disk.run(call, n)

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(submit, n)
    disk.close()
    assert results == {n: n * n for n in range(20)}
    assert sorted(n for n, _ in ran) == list(range(20))
    (ident,) = {ident for _, ident in ran}
    assert ident != threading.get_ident()


async def test_an_exception_reaches_the_caller() -> None:
    disk = DiskThread("test-disk-error")

    def fail() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        await disk.run(fail)
    assert await disk.run(len, b"still serving") == 13
    disk.close()


async def test_a_cancelled_caller_waits_for_its_call_to_end() -> None:
    """Like `anyio.to_thread.run_sync`: a write in flight is waited for, so its outcome is
    known (answered or not) even when the writer's task is cancelled."""
    disk = DiskThread("test-disk-cancel")
    started, release = threading.Event(), threading.Event()
    events: list[str] = []

    def write() -> str:
        started.set()
        release.wait(30)
        events.append("written")
        return "done"

    async def writer(scope: anyio.CancelScope) -> None:
        with scope:
            events.append(await disk.run(write))
        events.append("caller back")

    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer, scope)
        await anyio.to_thread.run_sync(started.wait, 30)
        scope.cancel()
        for _ in range(50):
            await anyio.lowlevel.checkpoint()
        assert events == []  # still waiting for the write, despite the cancellation
        release.set()
    disk.close()
    assert events == ["written", "done", "caller back"]


async def test_close_ends_the_thread() -> None:
    disk = DiskThread("test-disk-close")
    await disk.run(int)
    (thread,) = threads_named("test-disk-close")
    disk.close()
    thread.join(30)
    assert not thread.is_alive()
    assert await disk.run(int, "7") == 7  # a later call starts a fresh thread
    disk.close()


async def test_the_idle_call_runs_on_the_thread_once_calls_stop_and_at_the_end() -> None:
    """The writer lets go of the shards it holds open when idle: once per idle spell (an idle
    daemon is not woken every few seconds), and once more when the thread ends."""
    idle_threads: list[int] = []
    went_idle = threading.Event()

    def on_idle() -> None:
        idle_threads.append(threading.get_ident())
        went_idle.set()

    disk = DiskThread("test-disk-idle", idle=(0.05, on_idle))
    worker = await disk.run(threading.get_ident)
    assert await anyio.to_thread.run_sync(went_idle.wait, 10)
    await anyio.sleep(0.3)  # six idle periods more: still one call
    assert idle_threads == [worker]
    went_idle.clear()
    assert await disk.run(threading.get_ident) == worker
    assert await anyio.to_thread.run_sync(went_idle.wait, 10)
    assert idle_threads == [worker, worker]
    (thread,) = threads_named("test-disk-idle")
    disk.close()
    await anyio.to_thread.run_sync(thread.join, 10)
    assert idle_threads == [worker] * 3
