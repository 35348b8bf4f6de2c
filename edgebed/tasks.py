"""Stopping asyncio tasks for good."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


async def cancel_and_wait(tasks: Sequence[asyncio.Task], *, every: float = 0.1) -> None:
    """Cancels `tasks` and waits until every one has ended, cancelling again every `every`
    seconds those still running: a cancel that a library (or Python 3.11's asyncio.wait_for)
    swallows must not keep a stopping controller waiting forever. Their outcomes are dropped
    (errors were logged where they happened)."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" warning
