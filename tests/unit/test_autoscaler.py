"""The fleet loop against the recording fake provider, tick by tick on a manual clock: failures back
off and are reported, never loop hot; a node that never joins is terminated at the deadline."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import cast

import pytest
from contract.fake_provider import FakeProvider
from helpers import unit_gateway

from control_plane.cluster import Leadership
from control_plane.core import ManualClock
from control_plane.fleet import Fleet, FleetAutoscaler
from control_plane.gateway import Gateway
from control_plane.store import Store
from control_plane.telemetry import EventLog
from placement import PlacementRequest, Resources
from placement.fleet import FleetPolicy
from provisioners.base import InsufficientCapacityError, NodeType, ProviderError, QuotaError, ThrottledError


def _loop(tmp_path: Path) -> tuple[FleetAutoscaler, FakeProvider, ManualClock, EventLog]:
    clock = ManualClock()
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    fleet = Fleet(store, clock, heartbeat_interval_s=1, lost_after_s=10)
    gateway = unit_gateway(store, fleet, clock, tmp_path)
    provider = FakeProvider("unit")
    events = EventLog()
    scaler = FleetAutoscaler(provider, fleet, gateway, store, clock, events,
                             node_types={"small": NodeType("small", Resources(1000, 1024), 0.01, 30)},
                             policy=FleetPolicy(min_nodes=1, max_nodes=3, failure_backoff_s=30),
                             join_deadline_s=120, orphan_grace_s=60)
    return scaler, provider, clock, events


async def _settle(scaler: FleetAutoscaler) -> None:
    """Wait for the background provider calls (threads) to finish."""
    await asyncio.wait_for(scaler.tasks.wait(), 10)


def test_a_quota_stops_additions_with_one_event_until_a_probe_passes(tmp_path: Path) -> None:
    scaler, provider, clock, events = _loop(tmp_path)

    def quota_events() -> list[str]:
        return [e.reason for e in events.recent if e.kind == "quota_exceeded"]

    async def scenario() -> None:
        provider.next_create_error = QuotaError("vCPU limit", request_id="x")
        await scaler.tick()
        await _settle(scaler)
        assert len(provider.create_calls) == 1
        (reason,) = quota_events()
        assert "vCPU limit" in reason and "until a create passes again" in reason
        assert "quota" in (scaler.trouble() or "") and not scaler.can_grow()  # waiting calls are told
        for _ in range(20):  # a hot loop would call create every tick
            clock.advance(1)
            await scaler.tick()
            await _settle(scaler)
        assert len(provider.create_calls) == 1
        provider.next_create_error = QuotaError("vCPU limit", request_id="y")
        clock.advance(15)  # 30 s after it started: one probe, which fails too
        await scaler.tick()
        await _settle(scaler)
        assert len(provider.create_calls) == 2 and len(quota_events()) == 1  # no event per probe
        for _ in range(5):
            clock.advance(10)
            await scaler.tick()
            await _settle(scaler)
        assert len(provider.create_calls) == 2  # the wait between probes doubled (60 s)
        clock.advance(15)
        await scaler.tick()
        await _settle(scaler)
        assert len(provider.create_calls) == 3  # the next probe passes
        assert scaler.quota is None and scaler.trouble() is None
        assert [e.kind for e in events.recent].count("quota_cleared") == 1
        assert "probing whether the quota allows it again" in [e.reason for e in events.recent
                                                                if e.kind == "node_add"][-1]

    asyncio.run(scenario())


def test_a_quota_probe_that_fails_otherwise_is_tried_again(tmp_path: Path) -> None:
    scaler, provider, clock, _ = _loop(tmp_path)

    async def scenario() -> None:
        provider.create_errors = [QuotaError("vCPU limit"), ProviderError("API down")]
        await scaler.tick()
        await _settle(scaler)
        clock.advance(31)
        await scaler.tick()  # the probe: fails, but not for the quota
        await _settle(scaler)
        assert len(provider.create_calls) == 2 and scaler.quota is not None and not scaler.quota.probing
        clock.advance(31)
        await scaler.tick()  # a new probe, which passes
        await _settle(scaler)
        assert len(provider.create_calls) == 3 and scaler.quota is None

    asyncio.run(scenario())


def test_a_node_type_short_of_capacity_makes_way_for_the_next_that_fits(tmp_path: Path) -> None:
    scaler, provider, _, events = _loop(tmp_path)
    scaler.node_types["large"] = NodeType("large", Resources(2000, 2048), 0.02, 30)

    async def scenario() -> None:
        provider.next_create_error = InsufficientCapacityError("InsufficientInstanceCapacity: no t3.small",
                                                               request_id="x")
        await scaler.tick()
        await _settle(scaler)
        await scaler.tick()  # at once, not after a back-off: the next type that fits
        await _settle(scaler)
        assert [c.node_type for c in provider.create_calls] == ["small", "large"]
        failed = [e.reason for e in events.recent if e.kind == "provision_failed"]
        assert failed == ["provisioning small has no capacity: InsufficientInstanceCapacity: no t3.small"]
        added = [e.reason for e in events.recent if e.kind == "node_add"][-1]
        assert "small has no capacity (InsufficientInstanceCapacity: no t3.small), trying large instead" \
            in added

    asyncio.run(scenario())


def test_throttled_calls_are_retried_with_growing_jittered_waits(tmp_path: Path) -> None:
    scaler, provider, _, events = _loop(tmp_path)
    waits: list[float] = []
    scaler._retrying = scaler._retrying.copy(sleep=waits.append)  # no real sleeping

    async def scenario() -> None:
        provider.create_errors = [ThrottledError("RequestLimitExceeded"), ThrottledError("Throttling"),
                                  ThrottledError("RequestLimitExceeded")]
        await scaler.tick()
        await _settle(scaler)
        assert len(provider.create_calls) == 4 and len(provider.created_ids) == 1  # the 4th passed
        assert len(waits) == 3 and 1 <= waits[0] <= 2 and 2 <= waits[1] <= 3 and 4 <= waits[2] <= 5
        assert not [e for e in events.recent if e.kind == "provision_failed"]

    asyncio.run(scenario())


def test_throttling_that_does_not_stop_fails_the_provision_after_the_attempts(tmp_path: Path) -> None:
    scaler, provider, _, events = _loop(tmp_path)
    scaler._retrying = scaler._retrying.copy(sleep=lambda _: None)

    async def scenario() -> None:
        provider.create_errors = [ThrottledError("RequestLimitExceeded")] * 9
        await scaler.tick()
        await _settle(scaler)
        assert len(provider.create_calls) == 5  # the attempts, then a failure like any other
        assert any("RequestLimitExceeded" in e.reason for e in events.recent if e.kind == "provision_failed")

    asyncio.run(scenario())


@pytest.mark.parametrize("bug", [TypeError("create() got an unexpected keyword argument 'count'"),
                                 KeyError("InstanceId")])
def test_a_programming_error_in_the_provider_is_not_retried(tmp_path: Path, bug: Exception) -> None:
    scaler, provider, clock, events = _loop(tmp_path)
    scaler._retrying = scaler._retrying.copy(sleep=lambda _: None)

    async def scenario() -> None:
        provider.create_errors = [bug]
        await scaler.tick()
        await _settle(scaler)
        for _ in range(5):
            clock.advance(60)
            await scaler.tick()
            await _settle(scaler)
        assert len(provider.create_calls) == 1  # neither retried in place nor by later ticks
        (reason,) = [e.reason for e in events.recent if e.kind == "provider_bug"]
        assert type(bug).__name__ in reason and "during create" in reason
        assert not [e for e in events.recent if e.kind == "provision_failed"]
        assert scaler.trouble() == reason and not scaler.can_grow()

    asyncio.run(scenario())


def test_a_programming_error_in_a_listing_stops_the_loop_not_retried(tmp_path: Path) -> None:
    scaler, provider, clock, events = _loop(tmp_path)
    listings: list[int] = []

    def buggy() -> list[object]:
        listings.append(1)
        raise AttributeError("'NoneType' object has no attribute 'id'")

    provider.list_instances = buggy  # type: ignore[method-assign]

    async def scenario() -> None:
        for _ in range(5):
            await scaler.tick()
            clock.advance(10)
        assert len(listings) == 1 and not provider.create_calls
        assert [e.kind for e in events.recent].count("provider_bug") == 1

    asyncio.run(scenario())


def test_node_that_never_joins_is_terminated_at_the_deadline(tmp_path: Path) -> None:
    scaler, provider, clock, events = _loop(tmp_path)

    async def scenario() -> None:
        await scaler.tick()
        await _settle(scaler)
        (created,) = provider.created_ids
        assert scaler.provisions and not provider.terminate_calls
        clock.advance(60)
        await scaler.tick()
        assert len(provider.create_calls) == 1  # still waiting for it to join: no second node
        clock.advance(61)
        await scaler.tick()
        await _settle(scaler)
        assert [list(c.ids) for c in provider.terminate_calls] == [[created]]
        assert any(e.kind == "provision_failed" and "did not join" in e.reason for e in events.recent)

    asyncio.run(scenario())


def test_listing_failure_backs_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scaler, provider, clock, events = _loop(tmp_path)
    calls = []

    def broken() -> list[object]:
        calls.append(clock.now())
        raise ProviderError("API down")

    monkeypatch.setattr(provider, "list_instances", broken)

    async def scenario() -> None:
        for _ in range(10):
            await scaler.tick()
            clock.advance(0.5)
        assert len(calls) <= 3 and not provider.create_calls
        assert any(e.kind == "provider_error" for e in events.recent)

    asyncio.run(scenario())


def test_a_restarted_control_plane_finishes_written_down_provider_calls(tmp_path: Path) -> None:
    scaler, provider, _, _ = _loop(tmp_path)
    store = scaler.store

    async def first_life() -> None:
        await scaler.tick()
        await _settle(scaler)

    asyncio.run(first_life())
    (made,) = provider.created_ids
    (req,) = scaler.provisions
    # Written down but never made: a create (crash before the call) and a terminate.
    store.open_intent("never-called", "create", provider.name, node_type="small")
    store.open_intent("stop-it", "terminate", provider.name, provider_ids=[made])

    again, _, _, events2 = _loop(tmp_path)
    again.provider = provider  # the same cloud

    async def second_life() -> None:
        await again.recover()
        await _settle(again)

    asyncio.run(second_life())
    assert set(again.provisions) == {req, "never-called"}
    assert [c.request_id for c in provider.create_calls] == [req, "never-called"]
    assert [list(c.ids) for c in provider.terminate_calls] == [[made]]
    assert {i.request_id for i in store.open_intents(provider.name)} == {req, "never-called"}
    assert sum(e.kind == "intent_replayed" for e in events2.recent) == 3


def test_low_utilization_drains_a_node_then_removes_it(tmp_path: Path) -> None:
    from control_plane.functions import DeployedVersion, FunctionCreate
    from control_plane.gateway import FunctionPool, Instance, InstanceState
    from node_agent.protocol import Heartbeat
    from placement import NodeState, Resources

    scaler, provider, clock, events = _loop(tmp_path)
    scaler.policy = FleetPolicy(min_nodes=1, max_nodes=3, watermark_window_s=2, scale_down_cooldown_s=0)

    async def scenario() -> None:
        nodes = provider.create(scaler.node_types["small"], 2, request_id="two")
        for n in nodes:  # both join and report
            await scaler.fleet.heartbeat(Heartbeat(node_id=n.id, url="http://127.0.0.1:9", cpu_millis=1000,
                                                   memory_mib=1024, provider="fake"))
        cfg = FunctionCreate(name="f", memory_mb=256)
        pool = FunctionPool(DeployedVersion(function="f", version=1, code_digest="d", code_size=1,
                                            config=cfg))
        for i, n in enumerate(nodes):  # one idle instance on each node: 25% used, fits on one node
            pool.instances[f"i{i}"] = Instance(f"i{i}", "f", 1, n.id, "http://127.0.0.1:9", 1,
                                               Resources(250, 256), state=InstanceState.READY)
        cast(Gateway, scaler.workload).pools["f"] = pool
        for _ in range(4):  # utilization stays below the low watermark for the window
            await scaler.tick()
            clock.advance(1)
        drained = [e for e in events.recent if e.kind == "node_drain"]
        assert len(drained) == 1 and "fit" in drained[0].reason
        node_id = drained[0].node_id
        assert scaler.fleet.nodes[node_id].state is NodeState.DRAINING
        moved = [i for i in pool.draining.values() if i.node_id == node_id]
        assert len(moved) == 1 and all(i.node_id != node_id for i in pool.instances.values())
        pool.draining.clear()  # the reconciler stops the idle drained instance
        await scaler.tick()
        await _settle(scaler)
        assert any(e.kind == "node_remove" and e.node_id == node_id for e in events.recent)
        assert node_id not in scaler.fleet.nodes
        assert [list(c.ids) for c in provider.terminate_calls] == [[node_id]]

    asyncio.run(scenario())


def _leader(scaler: FleetAutoscaler, wall: list[float]) -> Leadership:
    leadership = Leadership(scaler.store, "leader", "http://leader", ttl_s=3.0,
                            on_deposed=scaler.reset, wall=lambda: wall[0])
    scaler.leadership = leadership
    return leadership


def test_the_leader_provisions_for_demand_another_control_plane_cannot_place(tmp_path: Path) -> None:
    scaler, provider, _, events = _loop(tmp_path)
    wall = [time.time()]
    leadership = _leader(scaler, wall)
    follower = Leadership(scaler.store, "follower", "http://follower", ttl_s=3.0, wall=lambda: wall[0],
                          pending=lambda: [PlacementRequest("big", Resources(500, 1024), count=2)])

    async def scenario() -> None:
        await leadership.tick()
        await follower.tick()
        await leadership.tick()  # now it sees the follower's demand
        await scaler.tick()
        await _settle(scaler)
        # the minimum of one node holds one of the two 1 GiB instances; a second node, the other
        assert len(provider.create_calls) == 2, [e.reason for e in events.recent]
        assert any("instance of big pending" in e.reason for e in events.recent if e.kind == "node_add")

    asyncio.run(scenario())


def test_a_deposed_leader_makes_no_provider_call(tmp_path: Path) -> None:
    scaler, provider, _, _ = _loop(tmp_path)
    wall = [time.time()]
    leadership = _leader(scaler, wall)

    async def scenario() -> None:
        await leadership.tick()
        assert leadership.is_leader
        # Another control plane took the lease while this one stalled (it has not noticed yet).
        wall[0] += 10
        assert scaler.store.acquire_lease("fleet", "other", ttl_s=3.0, now=time.time() + 10) == 2
        await scaler.tick()  # decides to add the minimum node; the fenced intent write is refused
        await _settle(scaler)
        assert provider.create_calls == [] and not leadership.is_leader and not scaler.provisions

    asyncio.run(scenario())


def test_a_provider_that_keeps_failing_is_trouble_and_wakes_waiting_calls(tmp_path: Path) -> None:
    scaler, provider, clock, _ = _loop(tmp_path)
    woken: list[int] = []
    workload = cast(Gateway, scaler.workload)
    workload.room_changed = lambda: woken.append(1)  # type: ignore[method-assign]

    async def scenario() -> None:
        assert scaler.trouble() is None and scaler.can_grow()
        provider.next_create_error = ProviderError("API down", request_id="x")
        await scaler.tick()
        await _settle(scaler)
        assert scaler.trouble() is None and scaler.can_grow()  # one failure: it will try again
        clock.advance(31)  # past the back-off
        provider.next_create_error = ProviderError("API down again", request_id="y")
        await scaler.tick()
        await _settle(scaler)
        assert len(provider.create_calls) == 2
        assert scaler.trouble() == "provisioning small failed: API down again"
        assert not scaler.can_grow() and woken  # calls waiting for room were told

    asyncio.run(scenario())


def test_a_listing_that_keeps_failing_is_trouble(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scaler, provider, clock, _ = _loop(tmp_path)

    def broken() -> list[object]:
        raise ProviderError("connection refused")

    monkeypatch.setattr(provider, "list_instances", broken)

    async def scenario() -> None:
        await scaler.tick()
        assert scaler.trouble() is None
        clock.advance(3)
        await scaler.tick()
        assert scaler.trouble() == "listing fake nodes failed: connection refused" and not scaler.can_grow()

    asyncio.run(scenario())


async def _join(scaler: FleetAutoscaler, request_id: str, node_id: str) -> None:
    """What a cloud node does: redeem its provision's join token under an id of its own (not the
    provider's), then beat."""
    from node_agent.protocol import Heartbeat

    token = scaler.store.issue_join_token(request_id, "fake", "small", ttl_s=60)
    scaler.store.redeem_join_token(token, node_id, secret_hash="h", url="http://127.0.0.1:9")
    scaler.fleet.joined[node_id] = request_id
    await scaler.fleet.heartbeat(Heartbeat(node_id=node_id, url="http://127.0.0.1:9", cpu_millis=1000,
                                           memory_mib=1024, provider="fake", node_type="small"))


def test_a_restart_keeps_a_joined_node_whose_id_is_not_its_machines(tmp_path: Path) -> None:
    scaler, provider, _, _ = _loop(tmp_path)

    async def first_life() -> None:
        await scaler.tick()
        await _settle(scaler)
        (req,) = scaler.provisions
        await _join(scaler, req, "node-abc")
        await scaler.tick()
        assert not scaler.provisions  # joined

    asyncio.run(first_life())
    (machine,) = provider.created_ids

    again, _, clock, events = _loop(tmp_path)
    again.provider = provider  # the same cloud

    async def second_life() -> None:
        again.fleet.load()  # the node is NotReady until it beats: it must not be dropped for it
        await again.recover()
        for _ in range(5):  # past the orphan grace, listing after listing
            await again.tick()
            await _settle(again)
            clock.advance(30)
        assert "node-abc" in again.fleet.nodes and again.provider_id("node-abc") == machine
        assert not provider.terminate_calls, [e.reason for e in events.recent]
        assert not {"node_gone", "orphan_terminated"} & {e.kind for e in events.recent}
        assert len(provider.create_calls) == 1

    asyncio.run(second_life())


def test_a_machine_gone_before_it_joined_is_replaced_without_waiting_for_the_deadline(tmp_path: Path) -> None:
    scaler, provider, clock, events = _loop(tmp_path)

    async def scenario() -> None:
        await scaler.tick()
        await _settle(scaler)
        (first,) = provider.created_ids
        provider.set_state(first, "terminated")  # its boot failed: it is no longer listed
        clock.advance(11)
        await scaler.tick()
        await _settle(scaler)
        gone = [e.reason for e in events.recent if e.kind == "provision_failed"]
        assert len(gone) == 1 and "gone before it joined" in gone[0]
        assert not scaler.provisions and scaler.failures["small"].consecutive == 1
        clock.advance(31)  # after the back-off of a failure of this run, a new node
        await scaler.tick()
        await _settle(scaler)
        assert len(provider.create_calls) == 2

    asyncio.run(scenario())


def test_a_machine_of_an_earlier_run_that_never_joined_is_replaced_at_once(tmp_path: Path) -> None:
    # `make up` on a data directory whose local agent died before it joined: the new run does not
    # wait for the old machine, nor back off for a failure that was not its own.
    scaler, provider, _, _ = _loop(tmp_path)

    async def first_life() -> None:
        await scaler.tick()
        await _settle(scaler)

    asyncio.run(first_life())
    (dead,) = provider.created_ids
    provider.set_state(dead, "terminated")

    again, _, clock, events = _loop(tmp_path)
    again.provider = provider

    async def second_life() -> None:
        await again.recover()
        await _settle(again)
        clock.advance(11)
        await again.tick()
        await _settle(again)
        assert any("gone before it joined (asked before the restart)" in e.reason for e in events.recent)
        assert "small" not in again.failures
        assert len(provider.create_calls) == 2 and len(set(provider.created_ids)) == 2  # replaced
        assert [list(c.ids) for c in provider.terminate_calls] == [[dead]]  # and cleaned up

    asyncio.run(second_life())
