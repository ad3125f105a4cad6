"""Node readiness by heartbeat age, driven by a manual clock (no sleeping), on a real SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from control_plane.core import ManualClock
from control_plane.fleet import Fleet
from control_plane.store import Store
from node_agent.protocol import Heartbeat
from placement import NodeState, Resources


def _beat(node_id: str = "n1") -> Heartbeat:
    return Heartbeat(node_id=node_id, url="http://127.0.0.1:1", cpu_millis=2000, memory_mib=4096)


def test_nodes_go_not_ready_then_lost_and_come_back(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    clock = ManualClock()
    fleet = Fleet(store, clock, heartbeat_interval_s=1, lost_after_s=10)

    async def run() -> None:
        await fleet.heartbeat(_beat())
        assert fleet.nodes["n1"].state is NodeState.READY
        clock.advance(2.5)
        assert await fleet.check() == [] and fleet.nodes["n1"].state is NodeState.READY
        clock.advance(1)
        assert await fleet.check() == [] and fleet.nodes["n1"].state is NodeState.NOT_READY
        clock.advance(10)
        lost = await fleet.check()
        assert [n.id for n in lost] == ["n1"] and fleet.nodes["n1"].state is NodeState.LOST
        assert await fleet.check() == []  # reported once
        await fleet.heartbeat(_beat())
        assert fleet.nodes["n1"].state is NodeState.READY

    asyncio.run(run())
    assert [r.state for r in store.list_nodes()] == ["ready"]


def test_stored_nodes_start_not_ready_until_they_report(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    first = Fleet(store, ManualClock(), heartbeat_interval_s=1, lost_after_s=10)
    asyncio.run(first.heartbeat(_beat("n2")))
    second = Fleet(store, ManualClock(), heartbeat_interval_s=1, lost_after_s=10)
    second.load()
    assert second.nodes["n2"].state is NodeState.NOT_READY
    views = second.views({"n2": Resources(500, 1024)})
    assert views[0].free == Resources(1500, 3072)


def test_a_restart_keeps_each_nodes_provision_link_and_waits_for_its_report(tmp_path: Path) -> None:
    # A cloud node joins under an id of its own: the link to its provider machine (the provision
    # request) survives the restart, from the redeemed join token.
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    token = store.issue_join_token("req-1", "aws", "small", ttl_s=60)
    store.redeem_join_token(token, "n1", secret_hash="h", url="http://127.0.0.1:1")
    first = Fleet(store, ManualClock(), heartbeat_interval_s=1, lost_after_s=10)
    first.joined["n1"] = "req-1"

    async def run(fleet: Fleet) -> None:
        await fleet.heartbeat(_beat("n1"))
        await fleet.heartbeat(_beat("n2"))  # joined with no token (a test node)

    asyncio.run(run(first))
    assert first.nodes["n1"].request_id == "req-1"

    clock = ManualClock()
    again = Fleet(store, clock, heartbeat_interval_s=1, lost_after_s=10)
    again.load()
    assert again.nodes["n1"].request_id == "req-1" and again.nodes["n2"].request_id == ""
    assert again.unheard == {"n1", "n2"}

    async def later() -> None:
        await again.heartbeat(_beat("n1"))
        assert again.unheard == {"n2"}
        clock.advance(11)
        await again.check()  # n2 is lost: nothing to wait for any more
        assert again.unheard == set()

    asyncio.run(later())


def test_a_node_ready_again_is_announced_before_anything_awaits(tmp_path: Path) -> None:
    """The reconciler must never see a node ready whose instances are not adopted yet (it would
    start others beside them): `on_ready` (which adopts) runs before the node is persisted."""
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    fleet = Fleet(store, ManualClock(), heartbeat_interval_s=1, lost_after_s=10)
    seen: list[str] = []
    persist = fleet._persist
    fleet._persist = lambda node: (seen.append("persisted"), persist(node))  # type: ignore[method-assign]
    fleet.on_ready = lambda: seen.append("ready")
    asyncio.run(fleet.heartbeat(Heartbeat(node_id="n1", url="http://127.0.0.1:9000", cpu_millis=1000,
                                          memory_mib=1024)))
    assert seen == ["ready", "persisted"]
