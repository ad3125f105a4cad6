"""Async calls (`control_plane.jobs.async_calls`) on the store's queue (SQLite and PostgreSQL), with
the function played by a script: retries and their back-off, the dead-letter queue and its
redrive, throttling and platform faults that are not attempts, the event age limit, a deleted
function, destinations, idempotent keys, and a worker that dies mid-call (the attempt runs again
under the same id, counted as a duplicate). The real thing, through Docker, is
tests/integration/test_async.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from control_plane.core import FunctionNotFound, NodeUnavailable, QueueUnavailable, QuotaExceeded, Throttled
from control_plane.jobs import AsyncCalls, AsyncSettings, Job, JobQueueError, Outcome, StoreQueue, attempt_id
from control_plane.store import Store

OK = Outcome(200, b'{"ok": true}')
BOOM = Outcome(500, json.dumps({"error": {"type": "HandlerError", "message": "boom"}}).encode())


class Script:
    """The function(s): per call id, what the next call answers (an Outcome or an exception)."""

    def __init__(self, answers: list[Outcome | Exception] | None = None,
                 decide: Callable[[str, bytes], Outcome] | None = None) -> None:
        self.answers = list(answers or [])
        self.decide = decide  # by the call (calls run concurrently: in no set order)
        self.calls: list[tuple[str, bytes, str]] = []
        self.default: Outcome = OK

    async def __call__(self, key: str, event: bytes, call_id: str) -> Outcome:
        self.calls.append((key, event, call_id))
        if self.decide is not None:
            return self.decide(key, event)
        answer = self.answers.pop(0) if self.answers else self.default
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store's database: SQLite, and PostgreSQL (where several control planes race)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return str(request.getfixturevalue("postgres_db"))


def _calls(db: str, script: Script, settings: dict[str, AsyncSettings | None] | None = None,
           *, lease_s: float = 1.0, base: float = 0.05) -> tuple[AsyncCalls, Store, StoreQueue]:
    store = Store(db)
    queue = StoreQueue(store, lease_s=lease_s, poll_max_s=0.05)
    known = settings if settings is not None else {}
    calls = AsyncCalls(store, queue, script, lambda key: known.get(key, AsyncSettings(tenant="default")),
                       concurrency=4, retry_base_s=base)
    return calls, store, queue


async def _serving(calls: AsyncCalls, until: Callable[[], Awaitable[bool]], within_s: float = 20) -> None:
    stop = asyncio.Event()
    worker = asyncio.create_task(calls.serve(stop))
    try:
        deadline = time.monotonic() + within_s
        while not await until():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await worker


def _state(store: Store, rid: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        call = store.async_call(rid)
        return call is not None and call.state in ("succeeded", "failed", "dead_lettered")
    return check


def test_a_call_that_succeeds_runs_once_under_its_request_id(db: str) -> None:
    script = Script()
    calls, store, queue = _calls(db, script)

    async def scenario() -> None:
        rid = await calls.enqueue("fn", "default", b'{"n": 1}')
        assert store.async_call(rid).state == "queued"
        await _serving(calls, _state(store, rid))
        call = store.async_call(rid)
        assert (call.state, call.attempts, call.duplicates) == ("succeeded", 1, 0)
        assert script.calls == [("fn", b'{"n": 1}', rid)]
        assert await queue.depth("invoke") == 0
    asyncio.run(scenario())


def test_failed_attempts_are_retried_with_back_off_under_their_own_ids(db: str) -> None:
    script = Script([BOOM, BOOM, OK])
    calls, store, _ = _calls(db, script, base=0.3)

    async def scenario() -> None:
        rid = await calls.enqueue("fn", "default", b"{}")
        started = time.time()
        await _serving(calls, _state(store, rid))
        assert time.time() - started >= 0.3 + 0.6 - 0.05  # base, then twice the base
        call = store.async_call(rid)
        assert (call.state, call.attempts) == ("succeeded", 3)
        assert [c[2] for c in script.calls] == [rid, f"{rid}-2", f"{rid}-3"] == [attempt_id(rid, n)
                                                                               for n in (1, 2, 3)]
    asyncio.run(scenario())


def test_a_call_out_of_retries_is_dead_lettered_with_its_event_and_redriven(db: str) -> None:
    script = Script()
    script.default = BOOM
    calls, store, _ = _calls(db, script, {"fn": AsyncSettings(tenant="default", max_retries=1)})

    async def scenario() -> None:
        rid = await calls.enqueue("fn", "default", b'{"keep": "me"}')
        await _serving(calls, _state(store, rid))
        call = store.async_call(rid)
        assert (call.state, call.attempts, call.error["type"]) == ("dead_lettered", 2, "HandlerError")
        [letter] = store.dead_letters(function="fn")
        assert (letter.request_id, letter.event) == (rid, b'{"keep": "me"}')
        assert letter.reason == "retries_exhausted"
        script.default = OK  # fixed: the redrive runs it again, from its first attempt
        assert await calls.redrive("fn") == [rid]
        assert store.dead_letters(function="fn") == []
        await _serving(calls, _state(store, rid))
        call = store.async_call(rid)
        assert (call.state, call.attempts) == ("succeeded", 1)
        assert script.calls[-1] == ("fn", b'{"keep": "me"}', rid)
    asyncio.run(scenario())


@pytest.mark.parametrize("fault", [Throttled("at max_instances"), QuotaExceeded("rps", quota="rps"),
                                   NodeUnavailable("node lost")])
def test_throttling_and_platform_faults_delay_and_are_no_attempt(db: str, fault: Exception) -> None:
    script = Script([fault, fault, fault, OK])
    calls, store, _ = _calls(db, script, {"fn": AsyncSettings(tenant="default", max_retries=0)})

    async def scenario() -> None:
        rid = await calls.enqueue("fn", "default", b"{}")
        await _serving(calls, _state(store, rid))
        call = store.async_call(rid)
        assert (call.state, call.attempts) == ("succeeded", 1)  # with no retries at all
        assert [c[2] for c in script.calls] == [rid] * 4
    asyncio.run(scenario())


def test_an_event_older_than_its_max_age_is_dead_lettered_unrun(db: str) -> None:
    script = Script()
    calls, store, queue = _calls(db, script,
                                 {"fn": AsyncSettings(tenant="default", max_event_age_s=60)})

    async def scenario() -> None:
        await queue.put([Job("invoke", "old", {"request_id": "old", "function": "fn", "tenant": "default",
                                               "event": "{}", "enqueued_at": time.time() - 61})])
        await _serving(calls, _state(store, "old"))
        assert store.async_call("old").state == "dead_lettered" and script.calls == []
        assert store.dead_letters()[0].reason == "event_too_old"
    asyncio.run(scenario())


def test_a_deleted_function_dead_letters_its_calls(db: str) -> None:
    script = Script([FunctionNotFound("gone")])
    calls, store, _ = _calls(db, script, {"was": None})

    async def scenario() -> None:
        before = await calls.enqueue("was", "default", b"{}")
        await _serving(calls, _state(store, before))
        assert store.async_call(before).state == "dead_lettered" and script.calls == []
        assert store.dead_letters()[0].reason == "function_gone"
    asyncio.run(scenario())


def test_destinations_get_lambdas_record(db: str) -> None:
    script = Script(decide=lambda key, event: BOOM if key == "acme/fn" and b'"i": 2' in event else OK)
    settings = {"acme/fn": AsyncSettings(tenant="acme", max_retries=0, on_success="function:audit",
                                         on_failure="function:acme/oops"),
                "acme/audit": AsyncSettings(tenant="acme"), "acme/oops": AsyncSettings(tenant="acme")}
    calls, store, _ = _calls(db, script, settings)

    async def scenario() -> None:
        good = await calls.enqueue("acme/fn", "acme", b'{"i": 1}')
        bad = await calls.enqueue("acme/fn", "acme", b'{"i": 2}')

        async def all_done() -> bool:
            return len(script.calls) == 4 and all(c.state in ("succeeded", "failed")
                                                  for c in store.async_calls())
        await _serving(calls, all_done)
        assert store.async_call(good).state == "succeeded" and store.async_call(bad).state == "failed"
        sent = {key: json.loads(event) for key, event, _ in script.calls if key != "acme/fn"}
        ok, failed = sent["acme/audit"], sent["acme/oops"]
        assert ok["requestContext"] == {"requestId": good, "functionArn": "acme/fn", "condition": "Success",
                                        "approximateInvokeCount": 1}
        assert ok["requestPayload"] == {"i": 1} and ok["responsePayload"] == {"ok": True}
        assert failed["requestContext"]["condition"] == "RetriesExhausted"
        assert failed["responsePayload"]["error"]["type"] == "HandlerError"
        sources = {c.function: c.source for c in store.async_calls()}
        assert sources["acme/audit"] == f"destination:{good}"
    asyncio.run(scenario())


def test_a_destination_in_another_tenant_is_refused(db: str) -> None:
    script = Script()
    calls, store, _ = _calls(db, script, {"acme/fn": AsyncSettings(tenant="acme",
                                                                         on_success="function:globex/spy")})

    async def scenario() -> None:
        rid = await calls.enqueue("acme/fn", "acme", b"{}")
        await _serving(calls, _state(store, rid))
        await asyncio.sleep(0.3)
        assert [c.function for c in store.async_calls()] == ["acme/fn"] and len(script.calls) == 1
    asyncio.run(scenario())


def test_a_key_enqueued_twice_is_one_call(db: str) -> None:
    script = Script()
    calls, store, queue = _calls(db, script)

    async def scenario() -> None:
        a = await calls.enqueue("fn", "default", b"{}", key="schedule:nightly:1700000000")
        b = await calls.enqueue("fn", "default", b"{}", key="schedule:nightly:1700000000")
        assert a == b and len(store.async_calls()) == 1 and await queue.depth("invoke") == 1
    asyncio.run(scenario())


def test_a_worker_that_dies_mid_call_leaves_the_attempt_to_another_which_counts_it(db: str) -> None:
    script = Script()
    calls, store, queue = _calls(db, script, lease_s=0.5)

    async def scenario() -> None:
        rid = await calls.enqueue("fn", "default", b"{}")
        # A worker took the job and started attempt 1, then died (no done, no retry, no result).
        [_lease] = await queue.take("invoke", 1)
        assert store.move_async_call(rid, was=("queued", 0), to={"state": "running", "attempts": 1,
                                                                 "updated_at": time.time()})
        await _serving(calls, _state(store, rid))
        call = store.async_call(rid)
        assert (call.state, call.attempts, call.duplicates) == ("succeeded", 1, 1)
        assert [c[2] for c in script.calls] == [rid]  # the same attempt, under the same id
    asyncio.run(scenario())


def test_a_job_delivered_after_its_call_ended_is_a_counted_duplicate(db: str) -> None:
    script = Script()
    calls, store, queue = _calls(db, script)

    async def scenario() -> None:
        rid = await calls.enqueue("fn", "default", b"{}")
        await _serving(calls, _state(store, rid))
        body: dict[str, Any] = {"request_id": rid, "function": "fn", "tenant": "default", "event": "{}",
                                "enqueued_at": time.time()}
        await queue.put([Job("invoke", f"{rid}:again", body)])  # as a broker's redelivery would
        await _serving(calls, lambda: _depth_zero(queue))
        assert store.async_call(rid).duplicates == 1 and len(script.calls) == 1
    asyncio.run(scenario())


async def _depth_zero(queue: StoreQueue) -> bool:
    return await queue.depth("invoke") == 0


def test_calls_accepted_at_once_are_put_together_each_once(db: str) -> None:
    """50 callers at once: their jobs go in a few puts (not 50), every call is recorded and queued
    once; the same key among them is one call; a queue that refuses fails each of its batch."""
    calls, store, queue = _calls(db, Script())
    puts: list[int] = []
    put = queue.put

    async def counting(jobs: Any) -> list[bool]:
        puts.append(len(jobs))
        return await put(jobs)

    queue.put = counting  # type: ignore[method-assign]

    async def scenario() -> None:
        rids = await asyncio.gather(*(calls.enqueue("f", "default", b"{}") for _ in range(50)),
                                    *(calls.enqueue("f", "default", b"{}", key="same") for _ in range(3)))
        assert len(set(rids)) == 51 and rids[-3:] == ["same"] * 3
        assert sum(puts) == 53 and len(puts) < 10, puts
        assert await queue.depth("invoke") == 51
        assert {c.request_id for c in store.async_calls(function="f", limit=1000)} == set(rids)

        async def refused(jobs: Any) -> list[bool]:
            raise JobQueueError("the database is away")

        queue.put = refused  # type: ignore[method-assign]
        results = await asyncio.gather(*(calls.enqueue("f", "default", b"{}") for _ in range(5)),
                                       return_exceptions=True)
        assert all(isinstance(r, QueueUnavailable) for r in results), results
    asyncio.run(scenario())
