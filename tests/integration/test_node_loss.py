"""A node agent killed with SIGKILL: its node goes Lost, is replaced, and its containers are removed."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import RunningPlatform, containers_of, start_platform, wait_for

pytestmark = pytest.mark.docker

ECHO = {"main.py": "import socket\n\ndef handler(event, context):\n    return socket.gethostname()\n"}


@pytest.fixture
def fragile(docker_engine: None, tmp_path: Path) -> Iterator[RunningPlatform]:
    plat = start_platform(tmp_path / "fragile", extra_env={"CUMULUS_NODE_LOST_AFTER_S": "3"})
    try:
        yield plat
    finally:
        plat.stop()


def test_killed_agent_is_replaced_and_its_containers_removed(fragile: RunningPlatform) -> None:
    fragile.deploy_ok("survivor", ECHO, keep_alive_s=600)
    first = fragile.invoke("survivor", {}).json()
    (node,) = [n for n in fragile.get("/v1/nodes") if n["state"] == "ready"]
    meta = json.loads((fragile.data_dir / "nodes" / node["id"] / "node.json").read_text())
    os.kill(meta["pid"], signal.SIGKILL)

    def replaced() -> bool:
        nodes = fragile.get("/v1/nodes")
        return any(n["state"] == "ready" and n["id"] != node["id"] for n in nodes) and \
            all(n["id"] != node["id"] for n in nodes)

    wait_for(replaced, 60, what="a new node and the dead one forgotten")
    wait_for(lambda: all(c["Labels"]["io.cumulus.node"] != node["id"] for c in containers_of("survivor")),
             60, what="the dead node's containers to be removed")
    after = fragile.invoke("survivor", {})
    assert after.status_code == 200, after.text
    assert after.json() != first
