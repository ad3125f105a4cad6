"""A node agent joins with a single-use join token, then heartbeats and serves like any node
(refused tokens are tested in-process in `tests/api/test_agents.py`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from helpers import REPO, RunningPlatform, free_port, wait_for

from control_plane.store import Store

pytestmark = pytest.mark.docker


def _agent(platform: RunningPlatform, tmp: Path, join_token: str) -> subprocess.Popen[bytes]:
    port = free_port()
    cfg = {"join_token": join_token, "control_plane_url": platform.url, "listen_port": port,
           "data_dir": str(tmp / "agent"), "cpu_millis": 1000, "memory_mib": 1024,
           "provider": "test", "node_type": "joiner", "heartbeat_interval_s": 0.5}
    path = tmp / "agent.json"
    path.write_text(json.dumps(cfg))
    return subprocess.Popen([sys.executable, "-m", "node_agent", "--config", str(path)], cwd=REPO,
                            env=platform.env, stdout=(tmp / "agent.log").open("wb"), stderr=subprocess.STDOUT)


def test_join_token_is_single_use_and_gives_a_node(platform: RunningPlatform, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{platform.data_dir / 'cumulus.db'}")
    token = store.issue_join_token("req-join-1", "test", "joiner", ttl_s=60)
    agent = _agent(platform, tmp_path, token)
    try:
        def joined() -> dict[str, object] | None:
            return next((n for n in platform.get("/v1/nodes") if n["node_type"] == "joiner"), None)

        node = wait_for(joined, 30, what="joined node")
        assert node["state"] == "ready" and node["provider"] == "test"
        identity = json.loads((tmp_path / "agent" / "identity.json").read_text())
        assert identity["node_id"] == node["id"]
        assert (tmp_path / "agent" / "identity.json").stat().st_mode & 0o777 == 0o600
        again = requests.post(f"{platform.url}/v1/internal/join", timeout=10,
                              json={"join_token": token, "url": "http://127.0.0.1:1"})
        assert again.status_code == 401 and again.json()["error"]["type"] == "Unauthorized"
    finally:
        agent.terminate()
        agent.wait(30)
