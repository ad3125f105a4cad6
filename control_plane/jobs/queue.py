"""`JobQueue`: the durable queue under async invocations, schedules, the event bus and workflows.

A job is a small JSON body in a named queue, with a key and a time before which it is not handed
out. Its guarantees, held by every implementation (`tests/contract/test_job_queue.py` runs the
same suite against the store, on SQLite and PostgreSQL, and against the NATS JetStream broker):

- `put` is durable once it returns, and idempotent by (queue, key) for `dedupe_s`: a key put again
  within that window, whether its job is still waiting, leased or done, is a duplicate — `put`
  says so (False) and changes nothing.
- `take` hands out jobs whose time has come, each leased to the caller for the queue's `lease_s`:
  no other caller gets it during the lease. A lease that ends with neither `done` nor `retry` (its
  worker or control plane died) hands the job out again, with `deliveries` one higher:
  delivery is at-least-once, never at-most-once. Jobs come out roughly in the order of their time.
- `extend` renews a lease for another `lease_s` (a long call keeps its job); `done` removes the job
  for good; `retry` puts it back, handed out again after a delay (no earlier).
- A lease is not a fence: once it ended, the job may be running elsewhere too. The store refuses a
  stale holder's `extend`, `done` and `retry` (`LeaseLost`); a broker may take them as the job's
  (JetStream does). Either way what a job does is fenced by its worker, by request id and attempt
  in its own records (`control_plane.jobs.worker`), which is how duplicates are detected.
- `depth` counts the jobs not done (waiting or leased).

Bodies are opaque here; what a job means (an invocation, a timer, a firing) is its worker's job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

MAX_BODY_BYTES = 1 << 20  # a job carries an event of at most 256 KiB (MAX_ASYNC_EVENT) plus its envelope
DEDUPE_S = 6 * 3600.0  # a key is a duplicate for 6 h, the longest an async event may wait by default


class JobQueueError(Exception):
    """The queue could not do what was asked (its database or broker is away)."""


class LeaseLost(JobQueueError):
    """The job's lease ended and the job went to another caller (or was already done)."""


@dataclass(frozen=True, slots=True)
class Job:
    """A job to put: `body` is JSON-serialisable; not handed out before `available_at` (epoch s)."""

    queue: str
    key: str
    body: Mapping[str, Any]
    available_at: float = 0.0

    def encoded(self) -> bytes:
        data = json.dumps(self.body, separators=(",", ":")).encode()
        if len(data) > MAX_BODY_BYTES:
            raise ValueError(f"a job's body is over {MAX_BODY_BYTES} bytes")
        return data


@dataclass(frozen=True, slots=True)
class Lease:
    """A job handed out: its body, how many times it was handed out (this one included), and the
    proof of the lease that `extend`, `done` and `retry` ask for."""

    queue: str
    key: str
    body: dict[str, Any]
    deliveries: int
    token: str
    handle: Any = field(default=None, compare=False, repr=False)  # the implementation's own


class JobQueue(Protocol):
    """The durable queue (see the module's docstring for the guarantees)."""

    lease_s: float

    async def put(self, jobs: Sequence[Job]) -> list[bool]:
        """Store the jobs (durably, once this returns); True for each new one, False for a duplicate."""
        ...

    async def take(self, queue: str, limit: int, wait_s: float = 0.0) -> list[Lease]:
        """Up to `limit` jobs of `queue` whose time has come, leased for `lease_s`; waits up to
        `wait_s` for the first if none is ready."""
        ...

    async def extend(self, lease: Lease) -> None:
        """The lease lasts another `lease_s` from now (LeaseLost if it went to another)."""
        ...

    async def done(self, lease: Lease) -> None:
        """The job is finished: never handed out again (LeaseLost if it went to another)."""
        ...

    async def retry(self, lease: Lease, delay_s: float) -> None:
        """Hand the job out again in `delay_s` (LeaseLost if it went to another)."""
        ...

    async def depth(self, queue: str) -> int:
        """Jobs of `queue` not done."""
        ...

    async def close(self) -> None:
        """Release connections (the jobs stay)."""
        ...
