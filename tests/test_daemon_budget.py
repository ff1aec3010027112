"""`mantisd.daemon.budget.Budget`: the bytes-and-rows bound of the writer's queue, on a real
event loop (no daemon process: the end-to-end bound is in test_daemon_memory.py)."""

from __future__ import annotations

import anyio
import pytest

from mantisd.daemon.budget import Budget


async def test_takes_what_fits_and_waits_for_the_rest() -> None:
    budget = Budget(max_bytes=100, max_rows=10)
    assert budget.try_acquire(60, 1)
    assert not budget.try_acquire(50, 1)  # 110 bytes would not fit
    assert budget.try_acquire(40, 9)
    assert not budget.try_acquire(0, 1)  # 11 rows would not fit
    got = anyio.Event()

    async def wait_for_room() -> None:
        await budget.acquire(50, 1)
        got.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_for_room)
        await anyio.wait_all_tasks_blocked()
        assert not got.is_set()  # backpressure: still waiting
        budget.release(40, 9)
        await anyio.wait_all_tasks_blocked()
        assert not got.is_set()  # 60 + 50 > 100: still waiting
        budget.release(60, 1)
    assert got.is_set()
    assert (budget.bytes, budget.rows) == (50, 1)


async def test_waiters_are_served_in_arrival_order() -> None:
    """A big request is not starved by small ones arriving after it."""
    budget = Budget(max_bytes=100)
    assert budget.try_acquire(90, 1)
    order: list[str] = []

    async def take(name: str, nbytes: int) -> None:
        await budget.acquire(nbytes, 1)
        order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, "big", 80)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(take, "small", 5)
        await anyio.wait_all_tasks_blocked()
        assert not budget.try_acquire(5, 1)  # would fit, but others wait first
        assert order == []
        budget.release(90, 1)
    assert order == ["big", "small"]
    assert budget.bytes == 85


async def test_an_item_larger_than_the_budget_goes_alone() -> None:
    budget = Budget(max_bytes=100, max_rows=2)
    assert budget.try_acquire(500, 5)  # nothing held: it may go, or it could never go
    assert not budget.try_acquire(1, 1)
    budget.release(500, 5)
    assert budget.try_acquire(1, 1)


async def test_a_cancelled_waiter_leaves_the_line_and_unblocks_those_behind() -> None:
    budget = Budget(max_bytes=100)
    assert budget.try_acquire(50, 1)
    small_got = anyio.Event()

    async def small() -> None:
        await budget.acquire(40, 1)
        small_got.set()

    big = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_acquire_in, big, budget, 80)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(small)
        await anyio.wait_all_tasks_blocked()
        assert not small_got.is_set()  # behind the big one
        big.cancel()
        await anyio.wait_all_tasks_blocked()
    assert small_got.is_set()
    assert (budget.bytes, budget.rows) == (90, 2)


async def _acquire_in(scope: anyio.CancelScope, budget: Budget, nbytes: int) -> None:
    with scope:
        await budget.acquire(nbytes, 1)
        pytest.fail("the big request was granted although it could not fit")


@pytest.mark.parametrize("granted_first", [False, True])
async def test_a_cancelled_waiter_holds_nothing_unless_acquire_returned(
    granted_first: bool,
) -> None:
    """Cancelled before or just after its grant: the share is held only by a caller to whom
    `acquire` returned (it then owns it), never leaked."""
    budget = Budget(max_bytes=100)
    assert budget.try_acquire(100, 1)
    returned: list[bool] = []
    scope = anyio.CancelScope()

    async def waiter() -> None:
        with scope:
            await budget.acquire(60, 1)
            returned.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        if granted_first:
            budget.release(100, 1)
            scope.cancel()
        else:
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            budget.release(100, 1)
    assert (budget.bytes, budget.rows) == ((60, 1) if returned else (0, 0))
    assert not budget._waiters
