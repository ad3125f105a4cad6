"""The fleet grows from zero on the first call, adds a node for pending demand, and shrinks back to
zero when load stops — with the local provider (real agent processes, real containers)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import RunningPlatform, containers_of, start_platform, wait_for

pytestmark = pytest.mark.docker

SLEEPY = {"main.py": "import socket, time\n\ndef handler(event, context):\n"
                     "    time.sleep(event.get('sleep', 0))\n    return socket.gethostname()\n"}


@pytest.fixture
def elastic(docker_engine: None, tmp_path: Path) -> Iterator[RunningPlatform]:
    env = {"CUMULUS_NODE_CPU_MILLIS": "1000", "CUMULUS_NODE_MEMORY_MIB": "1024",
           "CUMULUS_WATERMARK_WINDOW_S": "2", "CUMULUS_SCALE_DOWN_COOLDOWN_S": "2",
           "CUMULUS_SCALE_UP_COOLDOWN_S": "1"}
    plat = start_platform(tmp_path / "elastic", extra_env=env,
                          args=("--min-nodes", "0", "--max-nodes", "2"), wait_for_node=False)
    try:
        yield plat
    finally:
        plat.stop()


def test_fleet_grows_from_zero_adds_for_pending_and_shrinks_to_zero(elastic: RunningPlatform) -> None:
    assert elastic.get("/v1/nodes") == []
    elastic.deploy_ok("elastic", SLEEPY, memory_mb=256, max_instances=8, keep_alive_s=1)
    first = elastic.invoke("elastic", {})  # no node yet: this call waits for one to be added
    assert first.status_code == 200, first.text
    assert first.headers["X-Cumulus-Cold-Start"] == "true"
    assert len(elastic.get("/v1/nodes")) == 1

    with ThreadPoolExecutor(6) as pool:  # 6 x 256 MiB: one 1 GiB node holds 4
        results = list(pool.map(lambda _: elastic.invoke("elastic", {"sleep": 3}), range(6)))
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    added = [e for e in elastic.get("/v1/events?limit=1000") if e["kind"] == "node_add"]
    assert len(added) == 2 and "pending" in added[1]["reason"], added
    assert len({r.json() for r in results}) > 4  # more instances than one node holds

    wait_for(lambda: elastic.get("/v1/nodes") == [], 90, interval=0.5, what="the fleet to shrink to zero")
    wait_for(lambda: not list((elastic.data_dir / "nodes").glob("*/node.json")), 30, interval=0.2,
             what="the removed nodes' agents to be terminated")
    assert containers_of("elastic") == []
    kinds = [e["kind"] for e in elastic.get("/v1/events?limit=1000")]
    assert kinds.count("node_remove") == 2
    events = elastic.cli("events")
    assert events.returncode == 0 and "node_remove" in events.stdout


def test_sustained_high_utilization_adds_a_node(docker_engine: None, tmp_path: Path) -> None:
    env = {"CUMULUS_NODE_CPU_MILLIS": "4000", "CUMULUS_NODE_MEMORY_MIB": "1024",
           "CUMULUS_WATERMARK_WINDOW_S": "2", "CUMULUS_SCALE_UP_COOLDOWN_S": "1"}
    plat = start_platform(tmp_path / "hot", extra_env=env, args=("--min-nodes", "1", "--max-nodes", "2"))
    try:
        # Four warm instances of 224 MiB: 88% of the node's memory, above the 80% watermark.
        plat.deploy_ok("hot", SLEEPY, memory_mb=224, min_instances=4, max_instances=4)
        wait_for(lambda: len([n for n in plat.get("/v1/nodes") if n["state"] == "ready"]) == 2, 60,
                 interval=0.5, what="a second node for sustained high utilization")
        adds = [e for e in plat.get("/v1/events?limit=1000") if e["kind"] == "node_add"]
        assert "high watermark" in adds[-1]["reason"], adds
    finally:
        plat.stop()
