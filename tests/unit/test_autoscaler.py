"""The fleet loop against the recording fake provider, tick by tick on a manual clock: failures back
off and are reported, never loop hot; a node that never joins is terminated at the deadline."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from contract.fake_provider import FakeProvider

from control_plane.autoscaler import FleetAutoscaler
from control_plane.clock import ManualClock
from control_plane.events import EventLog
from control_plane.fleet import Fleet
from control_plane.gateway import Gateway
from control_plane.store import Store
from placement.fleet import FleetPolicy
from provisioners.base import NodeType, ProviderError, QuotaError


def _loop(tmp_path: Path) -> tuple[FleetAutoscaler, FakeProvider, ManualClock, EventLog]:
    clock = ManualClock()
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    fleet = Fleet(store, clock, heartbeat_interval_s=1, lost_after_s=10)
    gateway = Gateway(store, fleet, clock, node_token="t", queue_timeout_s=1)
    provider = FakeProvider("unit")
    events = EventLog()
    scaler = FleetAutoscaler(provider, fleet, gateway, clock, events,
                             node_types={"small": NodeType("small", 1000, 1024, 0.01, 30)},
                             policy=FleetPolicy(min_nodes=1, max_nodes=3, failure_backoff_s=30),
                             join_deadline_s=120, orphan_grace_s=60)
    return scaler, provider, clock, events


async def _settle(scaler: FleetAutoscaler) -> None:
    """Let background provider calls (threads) finish; bounded."""
    for _ in range(200):
        if not scaler.gateway._tasks:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("background provider calls did not finish")


def test_quota_error_backs_off_and_is_reported(tmp_path: Path) -> None:
    scaler, provider, clock, events = _loop(tmp_path)

    async def scenario() -> None:
        provider.next_create_error = QuotaError("vCPU limit", request_id="x")
        await scaler.tick()
        await _settle(scaler)
        assert len(provider.create_calls) == 1
        assert any(e.kind == "provision_failed" and "vCPU limit" in e.reason for e in events.recent)
        for _ in range(20):  # a hot loop would call create every tick
            clock.advance(1)
            await scaler.tick()
            await _settle(scaler)
        assert len(provider.create_calls) == 1
        clock.advance(15)
        await scaler.tick()
        await _settle(scaler)
        assert len(provider.create_calls) == 2  # after the back-off, it tries again

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
