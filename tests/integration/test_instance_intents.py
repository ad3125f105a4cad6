"""Instance starts and stops are written down before the agent is asked, and settled after a crash.

A control plane killed after deciding to stop an instance (its stop intent open) stops it when it
comes back, instead of adopting it again; a start it never saw answered is rolled back. Answered
intents are closed, so a running platform holds none.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import RunningPlatform, containers_of, start_platform, wait_for

from control_plane.store import InstanceIntent, Store
from node_agent.runtime import LABEL_INSTANCE

pytestmark = pytest.mark.docker

ECHO = {"main.py": "def handler(event, context):\n    return event\n"}


@pytest.fixture
def plat(docker_engine: None, tmp_path: Path) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path / "intents")
    try:
        yield running
    finally:
        running.stop()


def _running(function: str) -> list[str]:
    return [c["Labels"][LABEL_INSTANCE] for c in containers_of(function) if c["State"] == "running"]


def test_open_intents_are_settled_after_a_crash(plat: RunningPlatform) -> None:
    store = Store(f"sqlite:///{plat.data_dir / 'cumulus.db'}")
    owner = (plat.data_dir / "control_plane.id").read_text().strip()
    plat.deploy_ok("kept", ECHO, keep_alive_s=600)
    plat.deploy_ok("doomed", ECHO, keep_alive_s=600)
    for name in ("kept", "doomed"):
        assert plat.invoke(name, {"n": name}).status_code == 200
    # Answered starts leave no intent behind.
    wait_for(lambda: store.instance_intents(owner) == [], 10, what="the start intents closed")
    [doomed] = _running("doomed")
    [kept] = _running("kept")
    [node] = plat.get("/v1/nodes")

    # SIGKILL, as if right after deciding to stop "doomed" (its stop written down, the agent not
    # asked yet) and while starting an instance the agent never heard of.
    plat.proc.send_signal(signal.SIGKILL)
    plat.proc.wait(30)
    for instance_id, kind in ((doomed, "stop"), ("doomed-neverstarted", "start")):
        intent = InstanceIntent(instance_id=instance_id, owner=owner, kind=kind, function="doomed",
                                node_id=node["id"], node_url=node["url"])
        store.open_instance_intent(intent)
    restarted = start_platform(plat.data_dir, port=int(plat.url.rsplit(":", 1)[1]))
    plat.proc = restarted.proc

    wait_for(lambda: _running("doomed") == [], 30, what="the instance whose stop was open stopped")
    wait_for(lambda: store.instance_intents(owner) == [], 30, what="the replayed intents closed")
    wait_for(lambda: restarted.get("/v1/functions/kept")["instances"] == 1, 30, what="kept adopted")
    assert _running("kept") == [kept]  # adopted, not restarted
    resp = restarted.invoke("kept", {"again": True})
    assert resp.status_code == 200 and resp.headers["X-Cumulus-Cold-Start"] == "false", resp.text
    assert restarted.invoke("doomed", {"n": 1}).status_code == 200  # a new instance
