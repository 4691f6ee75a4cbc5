"""Small helpers for the node's long-running asyncio tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has really finished."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Repeating:
    """A background task that runs ``step`` every ``interval`` seconds, or as soon as
    :meth:`wake` is called (from any thread, through ``loop``)."""

    def __init__(self, name: str, step: Callable[[], Awaitable[None]], interval: float,
                 on_error: Callable[[Exception], None]) -> None:
        self._name = name
        self._step = step
        self._interval = interval
        self._on_error = on_error
        self._woken = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._woken.set)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except Exception as exc:  # reported; the next round tries again
                self._on_error(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self._interval)
            self._woken.clear()
