"""The leader lease (HA groundwork): one holder at a time, takeover after expiry with a new
generation, and fencing of a deposed leader's writes — on SQLite and on a real PostgreSQL server,
including contenders racing from threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from control_plane.store import LeaseLost, Store


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
