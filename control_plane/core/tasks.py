"""Background tasks a part owns: spawned on the event loop, kept referenced until done, cancelled
together on close, and awaitable (tests wait for them instead of sleeping)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Background:
    """A set of tasks: `spawn` adds one, `wait` awaits those running now, `cancel` stops them all."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` in the background (its exceptions are its own business: callers log them)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self) -> None:
        """Until every task spawned so far, and those they spawn, is done."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def cancel(self) -> None:
        """Cancel every running task."""
        for task in list(self._tasks):
            task.cancel()
