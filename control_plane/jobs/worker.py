"""What every consumer of the job queue runs: a loop that takes jobs while it has room, runs each
as its own task, and keeps going through a queue that is away; lease renewal while a job runs; the
back-off of a job that has to wait (throttled, say)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from control_plane.jobs.queue import JobQueue, JobQueueError, Lease, LeaseLost

log = logging.getLogger("cumulus.jobs")


def wait_backoff(deliveries: int) -> float:
    """How long a job that must wait (not failed: throttled, no room, a node lost) comes back
    after: doubling with its deliveries from 0.25 s, at most 30 s, jittered."""
    return float(min(30.0, 0.25 * 2.0 ** min(deliveries, 7)) * random.uniform(0.5, 1.0))


async def keep_lease(queue: JobQueue, lease: Lease) -> None:
    """Renew `lease` every third of the queue's lease, until cancelled."""
    while True:
        await asyncio.sleep(max(0.2, queue.lease_s / 3))
        with contextlib.suppress(JobQueueError):
            await queue.extend(lease)


async def serve_queue(queue: JobQueue, name: str, handle: Callable[[Lease], Awaitable[Any]],
                      stop: asyncio.Event, *, concurrency: int,
                      every: tuple[float, Callable[[], Awaitable[Any]]] | None = None) -> None:
    """Run `handle` on the jobs of queue `name`, at most `concurrency` at once, until `stop` (and
    `every[1]()` each `every[0]` seconds, first at once). A job whose handling fails comes back
    when its lease ends."""
    running: set[asyncio.Task[None]] = set()
    failures = 0
    last = -float("inf")

    async def one(lease: Lease) -> None:
        try:
            await handle(lease)
        except LeaseLost:
            log.info("event=job_lease_lost queue=%s key=%s", name, lease.key)
        except Exception:
            log.exception("event=job_failed queue=%s key=%s", name, lease.key)

    while not stop.is_set():
        if every is not None and time.monotonic() - last >= every[0]:
            try:
                await every[1]()
                last = time.monotonic()
            except Exception as exc:
                log.warning("event=job_periodic_failed queue=%s error=%r", name, exc)
        free = concurrency - len(running)
        if free <= 0:
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            continue
        try:
            leases = await queue.take(name, free, wait_s=1.0)
            failures = 0
        except JobQueueError as exc:
            leases = []
            failures += 1
            if failures in (1, 10) or failures % 100 == 0:
                log.warning("event=job_take_failed queue=%s failures=%d error=%s", name, failures, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(5.0, 0.2 * failures))
        for lease in leases:
            task = asyncio.create_task(one(lease))
            running.add(task)
            task.add_done_callback(running.discard)
    for task in list(running):
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
