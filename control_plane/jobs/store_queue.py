"""`StoreQueue`: the `JobQueue` in the control plane's own database (SQLite for the embedded default,
PostgreSQL with `FOR UPDATE SKIP LOCKED` for several control planes). See `control_plane.jobs.queue`
for the guarantees; `control_plane.store.jobs` for the statements.

A taker waiting for work polls the database, quickly at first and then every `poll_max_s`; a put
on this control plane wakes this control plane's takers of that queue at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from control_plane.jobs.queue import DEDUPE_S, Job, JobQueueError, Lease, LeaseLost


class JobStore(Protocol):
    """What `StoreQueue` needs of the store (`control_plane.store.Store`)."""

    def put_jobs(self, jobs: Sequence[dict[str, Any]], *, now: float, dedupe_s: float) -> list[bool]: ...
    def take_jobs(self, queue: str, limit: int, *, now: float, lease_s: float) -> list[Any]: ...
    def extend_job(self, job_id: int, token: str, *, until: float) -> bool: ...
    def finish_job(self, job_id: int, token: str, *, now: float) -> bool: ...
    def retry_job(self, job_id: int, token: str, *, available_at: float) -> bool: ...
    def job_depth(self, queue: str) -> int: ...
    def purge_done_jobs(self, *, before: float) -> int: ...


class StoreQueue:
    """The durable queue on the store."""

    def __init__(self, store: JobStore, *, lease_s: float = 60.0, dedupe_s: float = DEDUPE_S,
                 poll_max_s: float = 0.5, wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.lease_s = lease_s
        self.dedupe_s = dedupe_s
        self.poll_max_s = poll_max_s
        self.wall = wall
        self._wake: dict[str, asyncio.Event] = {}
        self._last_purge = 0.0

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except LeaseLost:
            raise
        except Exception as exc:  # the database is away or refused: said as the queue's error
            raise JobQueueError(f"the job store failed: {exc}") from exc

    async def put(self, jobs: Sequence[Job]) -> list[bool]:
        rows = []
        for job in jobs:
            job.encoded()  # bounded
            rows.append({"queue": job.queue, "key": job.key, "body": dict(job.body),
                         "available_at": job.available_at})
        new: list[bool] = await self._call(self.store.put_jobs, rows, now=self.wall(), dedupe_s=self.dedupe_s)
        for queue in {j.queue for j in jobs}:
            if queue in self._wake:
                self._wake[queue].set()
        return new

    async def take(self, queue: str, limit: int, wait_s: float = 0.0) -> list[Lease]:
        deadline = time.monotonic() + wait_s
        pause = 0.02
        wake = self._wake.setdefault(queue, asyncio.Event())
        while True:
            wake.clear()
            rows = await self._call(self.store.take_jobs, queue, limit, now=self.wall(), lease_s=self.lease_s)
            if rows:
                return [Lease(queue, r.key, dict(r.body), r.deliveries, f"{r.id}:{r.lease_token}")
                        for r in rows]
            await self._purge()
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), min(left, pause))
            pause = min(self.poll_max_s, pause * 2)

    async def _purge(self) -> None:
        now = self.wall()
        if now - self._last_purge > 60:
            self._last_purge = now
            await self._call(self.store.purge_done_jobs, before=now - self.dedupe_s)

    @staticmethod
    def _ident(lease: Lease) -> tuple[int, str]:
        job_id, _, token = lease.token.partition(":")
        return int(job_id), token

    async def extend(self, lease: Lease) -> None:
        job_id, token = self._ident(lease)
        if not await self._call(self.store.extend_job, job_id, token, until=self.wall() + self.lease_s):
            raise LeaseLost(f"job {lease.key} of {lease.queue} went to another taker")

    async def done(self, lease: Lease) -> None:
        job_id, token = self._ident(lease)
        if not await self._call(self.store.finish_job, job_id, token, now=self.wall()):
            raise LeaseLost(f"job {lease.key} of {lease.queue} went to another taker")

    async def retry(self, lease: Lease, delay_s: float) -> None:
        job_id, token = self._ident(lease)
        at = self.wall() + max(0.0, delay_s)
        if not await self._call(self.store.retry_job, job_id, token, available_at=at):
            raise LeaseLost(f"job {lease.key} of {lease.queue} went to another taker")
        if delay_s <= 0 and lease.queue in self._wake:
            self._wake[lease.queue].set()

    async def depth(self, queue: str) -> int:
        return int(await self._call(self.store.job_depth, queue))

    async def close(self) -> None:
        return None
