"""What a restart of the embedded default (local provider) finds, and how it comes back from it:
a known node that has not reported yet is waited for, not refused (no 503 right after a restart);
a node whose agent died before it ever joined is replaced, so `cumulus up` on that leftover data
directory comes up instead of waiting for it forever. (Cloud providers: tests/integration/
test_fleet_cloud.py; SIGKILLs under load: test_chaos.py.)"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from helpers import RunningPlatform, start_platform, wait_for

from provisioners.local import _alive

pytestmark = pytest.mark.docker

ECHO = {"main.py": "def handler(event, context):\n    return event\n"}


def _kill(plat: RunningPlatform) -> None:
    plat.proc.send_signal(signal.SIGKILL)
    plat.proc.wait(30)


def test_a_call_right_after_a_restart_is_answered_not_refused(docker_engine: None, tmp_path: Path) -> None:
    # The agent beats every 2 s: right after the restart the node is known but silent for up to 2 s.
    env = {"CUMULUS_HEARTBEAT_INTERVAL_S": "2"}
    plat = start_platform(tmp_path / "cp", extra_env=env)
    try:
        plat.deploy_ok("first", ECHO, keep_alive_s=600)
        assert plat.invoke("first", {"n": 0}).status_code == 200
        for n in (1, 2, 3):
            port = int(plat.url.rsplit(":", 1)[1])
            _kill(plat)
            # Up as soon as /healthz answers; the very first call goes out at once.
            plat = start_platform(tmp_path / "cp", extra_env=env, port=port, wait_for_node=False)
            resp = plat.invoke("first", {"n": n}, timeout=60)
            assert resp.status_code == 200 and resp.json() == {"n": n}, resp.text
        kinds = [e["kind"] for e in plat.get("/v1/events?limit=1000")]
        assert kinds.count("node_add") == 1, kinds  # the one node served every restart
    finally:
        plat.stop()


def test_up_replaces_a_node_whose_agent_died_before_it_joined(docker_engine: None, tmp_path: Path) -> None:
    data = tmp_path / "cp"
    plat = start_platform(data, wait_for_node=False)
    nodes = data / "nodes"

    def started_agent() -> int:
        for meta in nodes.glob("*/node.json"):
            pid = int(json.loads(meta.read_text()).get("pid") or 0)
            if pid:
                return pid
        return 0

    # Freeze the first agent the moment it exists (before its interpreter is even up, so before
    # it joins), then kill the control plane and the agent: a node created, never joined.
    pid = wait_for(started_agent, 60, interval=0.005, what="the first agent started")
    os.kill(pid, signal.SIGSTOP)
    try:
        assert plat.get("/v1/nodes") == [], "the agent joined before it could be frozen"
        _kill(plat)
    finally:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _alive(pid), 10, what="the frozen agent gone")
    (dead,) = [p.parent.name for p in nodes.glob("*/node.json")]

    started = time.monotonic()
    plat = start_platform(data)  # waits for "Press Ctrl-C": a node became ready
    try:
        took = time.monotonic() - started
        (node,) = plat.get("/v1/nodes")
        assert node["id"] != dead and node["state"] == "ready"
        reasons = [e["reason"] for e in plat.get("/v1/events?limit=1000") if e["kind"] == "provision_failed"]
        assert any(dead in r and "gone before it joined" in r for r in reasons), reasons
        wait_for(lambda: not (nodes / dead).exists(), 30, what="the dead node's folder removed")
        plat.deploy_ok("after", ECHO)
        assert plat.invoke("after", {"ok": 1}).json() == {"ok": 1}
        print(f"leftover never-joined node replaced; up in {took:.1f}s")
    finally:
        plat.stop()
