"""With several control planes, a node loss is one event (the leader's), not one per control plane;
every control plane still forgets the lost node's instances. Real SQLite store, manual clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

from helpers import unit_functions, unit_gateway

from control_plane.cluster import Leadership
from control_plane.core import ManualClock
from control_plane.fleet import Fleet
from control_plane.reconcile import Reconciler
from control_plane.store import Store
from control_plane.telemetry import EventLog, Telemetry
from node_agent.protocol import Heartbeat
from placement import NodeState


def _member(store: Store, name: str, data: Path) -> tuple[Reconciler, Fleet, EventLog, Leadership]:
    clock = ManualClock()
    fleet = Fleet(store, clock, heartbeat_interval_s=1, lost_after_s=10)
    gateway = unit_gateway(store, fleet, clock, data, owner=name)
    telemetry = Telemetry(store, log_retention=10)
    leadership = Leadership(store, name, f"http://{name}", ttl_s=30.0)
    rec = Reconciler(gateway, fleet, store, unit_functions(store, data), clock,
                     autoscaler=None, telemetry=telemetry, leadership=leadership)
    return rec, fleet, telemetry.events, leadership


def test_a_lost_node_is_one_event_recorded_by_the_leader(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    members = [_member(store, "a", tmp_path), _member(store, "b", tmp_path)]

    async def run() -> None:
        for _, fleet, _, leadership in members:
            await leadership.tick()
            await fleet.heartbeat(Heartbeat(node_id="n1", url="http://127.0.0.1:1", cpu_millis=1000,
                                            memory_mib=1024))
            rec_clock = fleet.clock
            assert isinstance(rec_clock, ManualClock)
            rec_clock.advance(30)  # silent for longer than lost_after_s
        assert [m[3].is_leader for m in members] == [True, False]
        for rec, fleet, _, _ in members:
            await rec.mirror()
            assert fleet.nodes["n1"].state is NodeState.LOST

    asyncio.run(run())
    kinds = [[e.kind for e in events.recent] for _, _, events, _ in members]
    assert kinds == [["node_lost"], []]
