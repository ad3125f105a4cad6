"""The leader lease (HA groundwork): one holder at a time, takeover after expiry with a new
generation, and fencing of a deposed leader's writes — on SQLite and on a real PostgreSQL server,
including contenders racing from threads."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from control_plane.cluster import Leadership
from control_plane.store import LeaseLost, Store
from placement import PlacementRequest, Resources


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    return Store(str(request.getfixturevalue("postgres_db")))


def test_one_holder_then_takeover_after_expiry(store: Store) -> None:
    assert store.acquire_lease("reconcilers", "a", ttl_s=10, now=100) == 1
    assert store.acquire_lease("reconcilers", "b", ttl_s=10, now=105) is None
    assert store.acquire_lease("reconcilers", "a", ttl_s=10, now=108) == 1  # renewal keeps it
    assert store.acquire_lease("reconcilers", "b", ttl_s=10, now=117) is None
    assert store.acquire_lease("reconcilers", "b", ttl_s=10, now=119) == 2  # expired: taken over
    assert store.acquire_lease("reconcilers", "a", ttl_s=10, now=120) is None
    store.release_lease("reconcilers", "b")
    assert store.acquire_lease("reconcilers", "a", ttl_s=10, now=121) == 3


def test_a_deposed_leader_cannot_write_intents(store: Store) -> None:
    import time

    now = time.time()
    generation = store.acquire_lease("reconcilers", "old", ttl_s=30, now=now)
    assert generation is not None
    store.open_intent("r1", "create", "local", node_type="small", fence=("reconcilers", "old", generation))
    assert [i.request_id for i in store.open_intents("local")] == ["r1"]
    store.release_lease("reconcilers", "old")
    assert store.acquire_lease("reconcilers", "new", ttl_s=30, now=now + 1) == generation + 1
    with pytest.raises(LeaseLost):
        store.open_intent("r2", "create", "local", fence=("reconcilers", "old", generation))
    assert [i.request_id for i in store.open_intents("local")] == ["r1"]


def test_racing_contenders_get_exactly_one_lease(store: Store) -> None:
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: store.acquire_lease("race", f"cp{i}", ttl_s=30, now=1000.0), range(8)))
    assert sum(g is not None for g in won) == 1


# -- Leadership: membership, election, deposition ------------------------------------------------

class Wall:
    """An injected wall clock for the lease."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _member(store: Store, name: str, wall: Wall, log: list[str],
            pending: list[PlacementRequest] | None = None) -> Leadership:
    async def elected() -> None:
        log.append(f"{name} elected")

    return Leadership(store, name, f"http://{name}", ttl_s=3.0, pending=lambda: pending or [],
                      on_elected=elected, on_deposed=lambda: log.append(f"{name} deposed"), wall=wall)


def test_the_first_member_leads_and_a_silent_leader_is_replaced(store: Store) -> None:
    wall, log = Wall(time.time()), []
    a, b = _member(store, "a", wall, log), _member(store, "b", wall, log)
    asyncio.run(a.tick())
    asyncio.run(b.tick())
    asyncio.run(a.tick())  # renewal: no new election, and now it sees b
    assert (a.is_leader, b.is_leader) == (True, False) and log == ["a elected"]
    assert a.live_ids() == b.live_ids() == {"a", "b"}
    wall.t += 2.0
    asyncio.run(b.tick())  # a renewed 2 s ago: still a's
    assert not b.is_leader
    wall.t += 1.5  # a silent for 3.5 s > TTL
    asyncio.run(b.tick())
    assert b.is_leader and b.fence == ("fleet", "b", 2)
    asyncio.run(a.tick())  # a wakes up: it learns it was deposed, and acts no more
    assert not a.is_leader and log == ["a elected", "b elected", "a deposed"]
    with pytest.raises(LeaseLost):
        store.open_intent("r-late", "create", "local", fence=("fleet", "a", 1))
    wall.t += 10.0  # a stays silent: no longer a live member for b
    asyncio.run(b.tick())
    assert b.live_ids() == {"b"}


def test_a_clean_leave_hands_over_at_once(store: Store) -> None:
    wall, log = Wall(time.time()), []
    a, b = _member(store, "a", wall, log), _member(store, "b", wall, log)
    asyncio.run(a.tick())
    asyncio.run(a.leave())
    asyncio.run(b.tick())
    assert b.is_leader and log == ["a elected", "a deposed", "b elected"]
    assert [m.id for m in b.members] == ["b"]


def test_members_publish_the_demand_they_cannot_place(store: Store) -> None:
    wall, log = Wall(time.time()), []
    want = [PlacementRequest(function="wide", resources=Resources(250, 256), count=3)]
    a, b = _member(store, "a", wall, log), _member(store, "b", wall, log, pending=want)
    asyncio.run(b.tick())
    asyncio.run(a.tick())
    assert a.others_pending() == want and b.others_pending() == []


def test_shared_secret_and_artifacts_are_one_per_cluster(store: Store) -> None:
    assert store.shared_secret("node_token", lambda: "first") == "first"
    assert store.shared_secret("node_token", lambda: "second") == "first"
    store.put_artifact("d1", b"zip bytes")
    store.put_artifact("d1", b"zip bytes")  # idempotent
    assert store.artifact("d1") == b"zip bytes" and store.artifact("nope") is None


def test_a_removed_node_is_never_revived(store: Store) -> None:
    from control_plane.store import NodeRecord

    def record(state: str) -> NodeRecord:
        return NodeRecord(id="n1", provider="local", node_type="local", url="http://n1", cpu_millis=1000,
                          memory_mib=512, state=state)

    store.upsert_node(record("ready"))
    store.delete_node("n1")
    store.upsert_node(record("ready"))  # a late heartbeat on another control plane
    store.set_node_state("n1", "draining")
    assert store.list_nodes() == []
    assert [(n.id, n.state) for n in store.list_nodes(removed=True)] == [("n1", "removed")]


def test_a_failed_takeover_is_tried_again_on_the_next_tick(store: Store) -> None:
    wall = Wall(time.time())
    calls = {"n": 0}

    async def flaky() -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("database hiccup while replaying intents")

    a = Leadership(store, "a", "http://a", ttl_s=3.0, on_elected=flaky, wall=wall)
    with pytest.raises(OSError):
        asyncio.run(a.tick())
    assert not a.is_leader
    asyncio.run(a.tick())  # a renewal of the lease it holds: the replay runs again, and succeeds
    assert a.is_leader and calls["n"] == 2
