"""The gateway's acquire/release and invoke logic without Docker: a scripted `AgentClient` stands in
for the node agents (starts complete when the test says so), on a real SQLite store and a fleet of
one node. Ordering comes from events, never from sleeping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import unit_gateway

from control_plane.core import (
    InstanceStartFailed,
    ManualClock,
    NoCapacity,
    NodeUnavailable,
    QuotaExceeded,
    Throttled,
)
from control_plane.fleet import Fleet
from control_plane.functions import DeployedVersion, FunctionCreate
from control_plane.gateway import AgentUnreachable, Gateway, Instance, StartAnswer
from control_plane.identity import Governor
from control_plane.store import Store, Tenant
from control_plane.telemetry import InvocationBuffer
from node_agent import protocol as p
from node_agent.protocol import Heartbeat
from placement import NodeState, Resources


@dataclass
class ScriptedAgents:
    """An `AgentClient` whose starts wait for `ready` (or fail as scripted) and whose invocations
    answer `outcome`; it records every call."""

    ready: asyncio.Event = field(default_factory=asyncio.Event)
    start_answers: list[StartAnswer] = field(default_factory=list)  # consumed first, then 200
    outcome: str = p.OK
    unreachable: int = 0  # this many invocations find no connection
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    invoked: list[str] = field(default_factory=list)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def start(self, inst: Instance, request: p.InstanceStart) -> StartAnswer:
        self.started.append(inst.id)
        if self.start_answers:
            return self.start_answers.pop(0)
        await self.ready.wait()
        return StartAnswer(200)

    async def stop(self, inst: Instance) -> None:
        self.stopped.append(inst.id)

    async def invoke(self, inst: Instance, body: bytes, *, request_id: str,
                     timeout_s: float, cold: bool = False) -> tuple[Mapping[str, str], bytes]:
        self.invoked.append(inst.id)
        if self.unreachable:
            self.unreachable -= 1
            raise AgentUnreachable(f"node {inst.node_id} refused")
        logs = b"a log line\n"
        if self.outcome == p.OK:
            result = body
        else:
            result = json.dumps({"type": self.outcome, "message": "boom", "traceback": ["line"]}).encode()
        return {p.OUTCOME_HEADER: self.outcome, p.LOG_BYTES_HEADER: str(len(logs)),
                p.DURATION_HEADER: "1500"}, logs + result


async def until(condition: Callable[[], bool], turns: int = 10_000) -> None:
    """Let the event loop run until `condition` holds (at most `turns` turns). Intents are written
    in threads, so after the first thousand turns each one also gives them a millisecond (a loaded
    machine): at most about 9 s in all."""
    for turn in range(turns):
        if condition():
            return
        await asyncio.sleep(0 if turn < 1000 else 0.001)
    raise AssertionError("the condition never held")


@dataclass
class Rig:
    gateway: Gateway
    agents: ScriptedAgents
    records: InvocationBuffer
    clock: ManualClock


async def _rig(tmp_path: Path, *, nodes: int = 1, queue_timeout_s: float = 5.0, function: str = "f",
               **config: object) -> Rig:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    clock = ManualClock()
    fleet = Fleet(store, clock, heartbeat_interval_s=1, lost_after_s=10)
    for i in range(nodes):
        await fleet.heartbeat(Heartbeat(node_id=f"n{i}", url=f"http://127.0.0.1:{9000 + i}", cpu_millis=4000,
                                        memory_mib=4096))
    agents = ScriptedAgents()
    gateway = unit_gateway(store, fleet, clock, tmp_path, agents=agents, queue_timeout_s=queue_timeout_s)
    records = InvocationBuffer()
    gateway.records = records
    name = function.rpartition("/")[2]
    gateway.set_version(DeployedVersion(function, 1, "d" * 64, 1, FunctionCreate(name=name, **config)))  # type: ignore[arg-type]
    await gateway.open()
    return Rig(gateway, agents, records, clock)


def test_a_cold_call_waits_for_its_instance_and_the_next_is_warm(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await _rig(tmp_path)
        pool = await rig.gateway.pool("f")
        first = asyncio.create_task(rig.gateway.acquire(pool))
        await until(lambda: bool(rig.agents.started))  # the call asked for an instance and waits for it
        assert not first.done() and pool.waiting == 1
        rig.agents.ready.set()
        inst, cold = await first
        assert cold and inst.in_flight == 1 and inst.is_ready
        await rig.gateway.release(pool, inst)
        again, cold_again = await rig.gateway.acquire(pool)
        assert again is inst and not cold_again and rig.agents.started == [inst.id]
        await rig.gateway.release(pool, again)
        assert inst.in_flight == 0 and pool.waiting == 0

    asyncio.run(scenario())


def test_a_busy_instance_at_max_queues_the_next_call_until_it_is_released(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await _rig(tmp_path, max_instances=1, concurrency=1)
        rig.agents.ready.set()
        pool = await rig.gateway.pool("f")
        inst, _ = await rig.gateway.acquire(pool)
        second = asyncio.create_task(rig.gateway.acquire(pool))
        await until(lambda: pool.waiting > 0)
        assert not second.done() and len(rig.agents.started) == 1  # at max: no second instance
        await rig.gateway.release(pool, inst)
        got, _ = await asyncio.wait_for(second, 5)
        assert got is inst and got.in_flight == 1

    asyncio.run(scenario())


def test_a_call_that_never_gets_a_slot_is_throttled(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await _rig(tmp_path, queue_timeout_s=0.05, max_instances=1, concurrency=1)
        rig.agents.ready.set()
        pool = await rig.gateway.pool("f")
        await rig.gateway.acquire(pool)
        second = asyncio.create_task(rig.gateway.acquire(pool))
        await until(lambda: pool.waiting > 0)
        rig.clock.advance(1)  # past the queue timeout, on the gateway's clock
        with pytest.raises(Throttled, match="limit of 1 instance"):
            await asyncio.wait_for(second, 5)
        assert pool.waiting == 0

    asyncio.run(scenario())


def test_concurrent_calls_start_instances_up_to_max(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await _rig(tmp_path, max_instances=3, concurrency=1)
        pool = await rig.gateway.pool("f")
        calls = [asyncio.create_task(rig.gateway.acquire(pool)) for _ in range(5)]
        await until(lambda: len(rig.agents.started) == 3 and pool.waiting == 5)
        rig.agents.ready.set()
        done, waiting = await asyncio.wait(calls, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        while len(done) < 3:
            more, waiting = await asyncio.wait(waiting, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            done |= more
        assert len(rig.agents.started) == 3 and len({t.result()[0].id for t in done}) == 3
        for task in done:
            await rig.gateway.release(pool, task.result()[0])
        rest = await asyncio.wait_for(asyncio.gather(*waiting), 5)
        assert len(rig.agents.started) == 3 and all(inst.in_flight == 1 for inst, _ in rest)

    asyncio.run(scenario())


def test_a_failed_start_fails_the_waiting_call(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await _rig(tmp_path)
        rig.agents.start_answers = [StartAnswer(502, "bad image")]
        pool = await rig.gateway.pool("f")
        with pytest.raises(InstanceStartFailed, match="bad image"):
            await asyncio.wait_for(rig.gateway.acquire(pool), 5)
        assert not pool.live() and pool.start_failures == 1

    asyncio.run(scenario())


def test_no_node_and_no_growth_is_no_capacity_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await _rig(tmp_path, nodes=0)
        pool = await rig.gateway.pool("f")
        with pytest.raises(NoCapacity, match="no node can run an instance of f"):
            await asyncio.wait_for(rig.gateway.acquire(pool), 5)
        assert rig.gateway.pending() == []  # nobody waits for it any more

    asyncio.run(scenario())


def test_a_full_node_is_skipped_until_it_reports_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await _rig(tmp_path, nodes=2)
        rig.agents.start_answers = [StartAnswer(409, "full")]  # another control plane placed there first
        rig.agents.ready.set()
        pool = await rig.gateway.pool("f")
        inst, cold = await asyncio.wait_for(rig.gateway.acquire(pool), 5)
        assert cold and len(rig.agents.started) == 2 and rig.agents.started[1] == inst.id
        refused = "n1" if inst.node_id == "n0" else "n0"
        fleet = rig.gateway.fleet
        assert rig.gateway.allocated()[refused] == fleet.nodes[refused].capacity  # full until it reports
        rig.clock.advance(1)
        await fleet.heartbeat(Heartbeat(node_id=refused, url=fleet.nodes[refused].url, cpu_millis=4000,
                                        memory_mib=4096))
        assert refused not in rig.gateway.allocated()

    asyncio.run(scenario())


def test_invoke_answers_with_the_outcome_and_records_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await _rig(tmp_path)
        rig.agents.ready.set()
        ok = await rig.gateway.invoke("f", b'{"x": 1}')
        assert ok.status == 200 and ok.body == b'{"x": 1}'
        assert ok.headers["X-Cumulus-Cold-Start"] == "true" and ok.headers["X-Cumulus-Duration-Ms"] == "1.500"
        rig.agents.outcome = p.HANDLER_ERROR
        failed = await rig.gateway.invoke("f", b"{}")
        assert failed.status == 500
        assert json.loads(failed.body)["error"] == {"type": p.HANDLER_ERROR, "message": "boom",
                                                    "traceback": ["line"]}
        records = rig.records.take()
        assert [(r.function, r.outcome, r.cold_start, r.logs) for r in records] == [
            ("f", p.OK, True, "a log line\n"), ("f", p.HANDLER_ERROR, False, "a log line\n")]

    asyncio.run(scenario())


def test_an_unreachable_node_is_retried_elsewhere_then_reported(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await _rig(tmp_path)
        rig.agents.ready.set()
        rig.agents.unreachable = 1
        answer = await rig.gateway.invoke("f", b"{}")  # the first instance is forgotten, a new one serves
        assert answer.status == 200 and len(rig.agents.started) == 2
        rig.agents.unreachable = 3
        with pytest.raises(NodeUnavailable):
            await rig.gateway.invoke("f", b"{}")
        assert len(rig.agents.invoked) == 5

    asyncio.run(scenario())


def test_a_call_waiting_for_a_node_is_told_when_none_will_come(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await _rig(tmp_path, nodes=0)
        growth: dict[str, object] = {"can": True, "trouble": None}
        rig.gateway.can_grow = lambda: bool(growth["can"])
        rig.gateway.trouble = lambda: growth["trouble"]  # type: ignore[assignment,return-value]
        pool = await rig.gateway.pool("f")
        call = asyncio.create_task(rig.gateway.acquire(pool))
        await until(lambda: pool.waiting == 1 and rig.gateway.pending() != [])  # waits for a node
        growth.update(can=False, trouble="provisioning small failed: vCPU limit")
        rig.gateway.room_changed()
        with pytest.raises(NoCapacity, match="the fleet cannot grow: provisioning small failed: vCPU limit"):
            await asyncio.wait_for(call, 5)

    asyncio.run(scenario())


def test_a_call_that_waited_for_a_node_in_vain_is_no_capacity_not_throttled(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await _rig(tmp_path, nodes=0, queue_timeout_s=0.05)
        rig.gateway.can_grow = lambda: True
        rig.gateway.provision_wait_s = 10
        pool = await rig.gateway.pool("f")
        call = asyncio.create_task(rig.gateway.acquire(pool))
        await until(lambda: pool.waiting == 1)
        rig.clock.advance(11)  # the node never came
        rig.gateway.room_changed()  # the waiter looks at the clock again (in production: its timer)
        with pytest.raises(NoCapacity, match="no node became ready within 10s"):
            await asyncio.wait_for(call, 5)

    asyncio.run(scenario())


def test_a_call_waits_for_a_known_node_that_has_not_reported_yet(tmp_path: Path) -> None:
    # Right after a restart every stored node is NotReady until its agent beats again: a call
    # waits for it (as for a booting node) instead of failing with NoCapacity.
    async def scenario() -> None:
        rig = await _rig(tmp_path)
        fleet = rig.gateway.fleet
        fleet.nodes["n0"].state = NodeState.NOT_READY
        rig.agents.ready.set()
        pool = await rig.gateway.pool("f")
        call = asyncio.create_task(rig.gateway.acquire(pool))
        await until(lambda: pool.waiting == 1)
        assert not call.done() and not rig.agents.started
        await fleet.heartbeat(Heartbeat(node_id="n0", url="http://127.0.0.1:9000", cpu_millis=4000,
                                        memory_mib=4096))
        rig.gateway.room_changed()  # what the fleet's on_ready does
        inst, cold = await asyncio.wait_for(call, 5)
        assert cold and inst.node_id == "n0"

    asyncio.run(scenario())


def test_a_call_waiting_for_a_silent_node_fails_once_it_is_lost(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await _rig(tmp_path)
        fleet = rig.gateway.fleet
        fleet.nodes["n0"].state = NodeState.NOT_READY
        pool = await rig.gateway.pool("f")
        call = asyncio.create_task(rig.gateway.acquire(pool))
        await until(lambda: pool.waiting == 1)
        rig.clock.advance(11)
        assert [n.id for n in await fleet.check()] == ["n0"]
        rig.gateway.room_changed()  # what the reconciler does on a loss
        with pytest.raises(NoCapacity):
            await asyncio.wait_for(call, 5)

    asyncio.run(scenario())


def test_a_start_on_an_unreachable_node_is_placed_elsewhere_not_failed(tmp_path: Path) -> None:
    # The node's agent died and it has not missed enough heartbeats to be NotReady: the start finds
    # no connection (nothing was sent), so the call's instance goes to another node.
    @dataclass
    class DeadFirstNode(ScriptedAgents):
        async def start(self, inst: Instance, request: p.InstanceStart) -> StartAnswer:
            if inst.node_id == "n0":
                self.started.append(inst.id)
                raise AgentUnreachable("connection refused")
            return await super().start(inst, request)

    async def scenario() -> None:
        rig = await _rig(tmp_path, nodes=2)
        agents = DeadFirstNode()
        agents.ready.set()
        rig.gateway.agents = agents
        rig.gateway.fleet.nodes["n0"].capacity = Resources(1000, 1024)  # best fit: n0 is tried first
        pool = await rig.gateway.pool("f")
        inst, cold = await asyncio.wait_for(rig.gateway.acquire(pool), 5)
        assert inst.node_id == "n1" and cold and pool.start_failures == 0
        assert len(agents.started) == 2

    asyncio.run(scenario())


# -- tenants' quotas and budgets -----------------------------------------------------------------------
def _govern(rig: Rig, **tenant: object) -> Governor:
    governor = Governor(rig.clock)
    governor.load([Tenant(**{"name": "acme", **tenant})])  # type: ignore[arg-type]
    rig.gateway.governor = governor
    return governor


def test_the_instances_quota_bounds_starts_across_the_tenants_functions(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await _rig(tmp_path, function="acme/f", max_instances=5, concurrency=1, queue_timeout_s=0.05)
        _govern(rig, quotas={"instances": 2})
        rig.agents.ready.set()
        pool = await rig.gateway.pool("acme/f")
        calls = [asyncio.create_task(rig.gateway.acquire(pool)) for _ in range(3)]
        await until(lambda: sum(t.done() for t in calls) == 2 and pool.waiting == 1)
        assert len(rig.agents.started) == 2  # the third call waits for a slot; no third instance
        rig.clock.advance(1)
        waiting = next(t for t in calls if not t.done())
        with pytest.raises(QuotaExceeded) as err:
            await asyncio.wait_for(waiting, 5)
        assert err.value.extra["quota"] == "instances" and err.value.retry_after_s
        # Another function of the tenant finds the quota used up: refused at once, nothing started.
        rig.gateway.set_version(DeployedVersion("acme/g", 1, "d" * 64, 1, FunctionCreate(name="g")))
        other = await rig.gateway.pool("acme/g")
        with pytest.raises(QuotaExceeded, match="instances quota of 2"):
            await asyncio.wait_for(rig.gateway.acquire(other), 5)
        assert len(rig.agents.started) == 2
        # Other tenants are not bound by it.
        rig.gateway.set_version(DeployedVersion("h", 1, "d" * 64, 1, FunctionCreate(name="h")))
        inst, _ = await asyncio.wait_for(rig.gateway.acquire(await rig.gateway.pool("h")), 5)
        assert inst.function == "h"

    asyncio.run(scenario())


def test_a_tenant_over_budget_or_at_its_instances_quota_asks_for_no_node(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await _rig(tmp_path, nodes=0, function="acme/f", max_instances=4, concurrency=1)
        rig.gateway.can_grow = lambda: True  # calls wait for a node the autoscaler would add
        pool = await rig.gateway.pool("acme/f")
        calls = [asyncio.create_task(rig.gateway.acquire(pool)) for _ in range(3)]
        await until(lambda: pool.waiting == 3 and pool.unplaced > 0)
        assert [r.count for r in rig.gateway.pending()] == [3]  # no governor: all it needs
        governor = _govern(rig, quotas={"instances": 2})
        assert [r.count for r in rig.gateway.pending()] == [2]  # no more than its quota
        governor.load([Tenant(name="acme", budget=1, budget_action="warn", over_budget_month="2026-12")])
        assert rig.gateway.pending() == []  # over budget (only warned): the fleet grows no more for it
        assert governor.blocked("acme") and governor.blocked("default") is None
        for t in calls:
            t.cancel()
        await asyncio.gather(*calls, return_exceptions=True)

    asyncio.run(scenario())


def test_a_forgotten_nodes_answered_calls_go_to_metering_unless_it_delivered_them(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = await _rig(tmp_path)
        rig.agents.ready.set()
        witnessed: list[tuple[str, list[str]]] = []
        rig.gateway.usage_witnessed = lambda node, calls: witnessed.append(
            (node, [c["request_id"] for c in calls]))
        answers = [await rig.gateway.invoke("f", b"{}") for _ in range(3)]
        ids = [a.headers["X-Request-Id"] for a in answers]
        rig.gateway.answered.stored("n0", ids[:1])  # the node's own record of the first is stored
        rig.gateway.forget_node("n0")
        await until(lambda: bool(witnessed))
        assert witnessed == [("n0", ids[1:])]

    asyncio.run(scenario())
