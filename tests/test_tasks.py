"""cancel_and_wait (edgebed/tasks.py): a task that swallows its cancel, as Python 3.11's
asyncio.wait_for can, still ends; a controller's stop never waits on it forever."""

from __future__ import annotations

import asyncio

from edgebed.tasks import cancel_and_wait


async def test_a_task_that_swallows_its_first_cancels_is_cancelled_until_it_ends():
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed >= 3:
                    raise

    async def failing() -> None:
        raise RuntimeError("logged where it happened")

    tasks = [asyncio.create_task(stubborn()), asyncio.create_task(failing()), asyncio.create_task(asyncio.sleep(10))]
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(tasks, every=0.01), 5)
    assert swallowed == 3 and all(task.done() for task in tasks)
    assert tasks[0].cancelled() and tasks[2].cancelled() and isinstance(tasks[1].exception(), RuntimeError)


async def test_a_scheduler_stops_even_when_its_wake_and_the_cancel_come_together(tmp_path):
    """The scheduler's wait between polls is woken and cancelled in the same loop iteration, many
    times over: stop() returns every time."""
    from edgebed.controller.app import open_controller
    from tests.controller.conftest import make_settings

    settings = make_settings(tmp_path)
    async with open_controller(settings, run_scheduler=True) as ctl:
        for _ in range(50):
            ctl.scheduler.start()
            await asyncio.sleep(0.01)
            ctl.scheduler.wake()
            await asyncio.wait_for(ctl.scheduler.stop(), 5)
