"""The `JobQueue` contract (control_plane/jobs/queue.py), held by every implementation: the store on
SQLite and on a real PostgreSQL server, and a real NATS JetStream server. Puts are idempotent by key
(waiting, leased or done), a job is leased to one taker at a time, a lease that ends hands the job
out again, `retry` delays it, `done` removes it, and several concurrent takers share the jobs with
none taken twice while leased."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from control_plane.jobs import Job, JobQueue, LeaseLost, NatsQueue, StoreQueue
from control_plane.store import Store

LEASE_S = 1.0


class Queues:
    """Queues on one backing store (two of them: two control planes), made and closed in the
    event loop of one scenario."""

    def __init__(self, kind: str, make: Callable[[float], JobQueue]) -> None:
        self.kind = kind
        self._make = make
        self._made: list[JobQueue] = []

    def __call__(self, lease_s: float = LEASE_S) -> JobQueue:
        q = self._make(lease_s)
        self._made.append(q)
        return q

    def run(self, scenario: Callable[[], Awaitable[None]]) -> None:
        async def whole() -> None:
            try:
                await scenario()
            finally:
                for q in self._made:
                    await q.close()
                self._made.clear()
        asyncio.run(whole())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg),
                        pytest.param("nats", marks=pytest.mark.broker)])
def queues(request: pytest.FixtureRequest, tmp_path: Path) -> Queues:
    if request.param == "nats":
        url = str(request.getfixturevalue("nats_server"))
        return Queues("nats", lambda lease_s: NatsQueue(url, lease_s=lease_s))
    db = (f"sqlite:///{tmp_path / 'jobs.sqlite'}" if request.param == "sqlite"
          else str(request.getfixturevalue("postgres_db")))
    store = Store(db)
    return Queues(request.param, lambda lease_s: StoreQueue(store, lease_s=lease_s))


def _queue_name() -> str:
    return f"q{uuid.uuid4().hex[:8]}"  # NATS keeps its stream across tests: each its own queue


def test_a_put_job_is_taken_with_its_body_and_done_for_good(queues: Queues) -> None:
    async def scenario() -> None:
        q, name = queues(), _queue_name()
        assert await q.put([Job(name, "k1", {"event": "{\"a\": 1}", "n": [1, 2]})]) == [True]
        assert await q.depth(name) == 1
        [lease] = await q.take(name, 10, wait_s=5)
        assert (lease.key, lease.body, lease.deliveries) == ("k1", {"event": "{\"a\": 1}", "n": [1, 2]}, 1)
        await q.done(lease)
        assert await q.depth(name) == 0
        assert await q.take(name, 10, wait_s=LEASE_S * 2) == []  # not even once its lease is past
    queues.run(scenario)


def test_a_key_put_again_is_a_duplicate_waiting_leased_or_done(queues: Queues) -> None:
    async def scenario() -> None:
        q, name = queues(), _queue_name()
        assert await q.put([Job(name, "a", {"v": 1}), Job(name, "b", {"v": 2})]) == [True, True]
        assert await q.put([Job(name, "a", {"v": 99})]) == [False]  # waiting
        leases = await q.take(name, 1, wait_s=5)
        assert await q.put([Job(name, leases[0].key, {"v": 99})]) == [False]  # leased
        await q.done(leases[0])
        assert await q.put([Job(name, leases[0].key, {"v": 99})]) == [False]  # done
        [other] = await q.take(name, 10, wait_s=5)
        assert other.body["v"] in (1, 2) and other.key != leases[0].key  # bodies unchanged
        await q.done(other)
        assert await q.depth(name) == 0
    queues.run(scenario)


def test_a_lease_that_ends_hands_the_job_out_again(queues: Queues) -> None:
    async def scenario() -> None:
        q, name = queues(), _queue_name()
        await q.put([Job(name, "k", {})])
        [first] = await q.take(name, 1, wait_s=5)
        assert await q.take(name, 1, wait_s=LEASE_S / 4) == []  # leased: nobody else gets it
        [again] = await q.take(name, 1, wait_s=LEASE_S * 5)  # its holder died: at-least-once
        assert again.key == "k" and again.deliveries > first.deliveries
        await q.done(again)
        assert await q.depth(name) == 0
    queues.run(scenario)


def test_extend_keeps_a_long_job(queues: Queues) -> None:
    async def scenario() -> None:
        q, name = queues(), _queue_name()
        await q.put([Job(name, "long", {})])
        [lease] = await q.take(name, 1, wait_s=5)
        for _ in range(4):  # twice its lease in all, renewed at every half
            await asyncio.sleep(LEASE_S / 2)
            await q.extend(lease)
            assert await q.take(name, 1) == []
        await q.done(lease)
    queues.run(scenario)


def test_retry_hands_the_job_out_after_its_delay_and_no_sooner(queues: Queues) -> None:
    async def scenario() -> None:
        q, name = queues(), _queue_name()
        await q.put([Job(name, "r", {"x": 1})])
        [lease] = await q.take(name, 1, wait_s=5)
        retried = time.time()
        await q.retry(lease, 1.5)
        [again] = await q.take(name, 1, wait_s=10)
        assert time.time() - retried >= 1.4 and again.body == {"x": 1}
        await q.done(again)
    queues.run(scenario)


def test_a_job_put_for_later_waits_for_its_time(queues: Queues) -> None:
    async def scenario() -> None:
        q, name = queues(), _queue_name()
        at = time.time() + 1.5
        await q.put([Job(name, "later", {}, available_at=at), Job(name, "now", {})])
        [now] = await q.take(name, 10, wait_s=5)
        assert now.key == "now"
        await q.done(now)
        [later] = await q.take(name, 10, wait_s=10)
        assert later.key == "later" and time.time() >= at - 0.05
        await q.done(later)
    queues.run(scenario)


def test_concurrent_takers_on_two_queues_share_every_job_once(queues: Queues) -> None:
    """Two control planes' takers, four each, on one backing store: every job done exactly once.
    (Leases long enough that none ends here: a loaded machine must not turn this into a test of
    expiry, which the tests above make on purpose.)"""
    async def scenario() -> None:
        a, b, name = queues(30.0), queues(30.0), _queue_name()
        keys = [f"j{i}" for i in range(200)]
        await a.put([Job(name, k, {"k": k}) for k in keys])
        seen: list[str] = []

        async def taker(q: JobQueue) -> None:
            idle = 0
            while idle < 3:
                leases = await q.take(name, 7, wait_s=0.3)
                idle = 0 if leases else idle + 1
                for lease in leases:
                    seen.append(lease.body["k"])
                    await q.done(lease)

        await asyncio.gather(*(taker(q) for q in (a, b) for _ in range(4)))
        assert sorted(seen) == sorted(keys)  # none lost, none twice
        assert await a.depth(name) == 0 and await b.depth(name) == 0
    queues.run(scenario)


def test_the_stores_lease_fences_a_stale_holder(queues: Queues) -> None:
    """The store refuses what a holder whose lease went to another does (the broker cannot: its
    workers fence by request id, see `control_plane.jobs.queue`)."""
    if queues.kind == "nats":
        pytest.skip("JetStream takes an expired delivery's ack as the job's: fenced by the worker")
    async def scenario() -> None:
        q, name = queues(), _queue_name()
        await q.put([Job(name, "f", {})])
        [stale] = await q.take(name, 1, wait_s=5)
        [fresh] = await q.take(name, 1, wait_s=LEASE_S * 5)
        for call in (q.extend(stale), q.done(stale), q.retry(stale, 0)):
            with pytest.raises(LeaseLost):
                await call
        await q.done(fresh)
        assert await q.depth(name) == 0
    queues.run(scenario)
