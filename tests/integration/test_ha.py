"""High availability: two control planes on one PostgreSQL database, sharing the fleet.

Both serve the API and invocations; one holds the leader lease and runs the fleet loop. SIGKILL the
leader: the other takes over within the lease TTL (measured), keeps serving, scales the fleet, and
removes the instances the dead one left on nodes. Restart the dead one, kill the new leader: it
takes over back. At the end the provider's nodes equal the store's (no leak, no duplicate).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from helpers import RunningPlatform, docker_client, start_platform, wait_for

from node_agent.runtime import LABEL_OWNER
from provisioners.local import LocalProvider, _alive

pytestmark = [pytest.mark.docker, pytest.mark.pg]

TTL_S = 3.0
CLIENT_TIMEOUT_S = 60.0  # a call that outlives this has hung
ECHO = {"main.py": "def handler(event, context):\n"
                   "    return {'event': event, 'version': context.function_version}\n"}


@pytest.fixture
def cluster(docker_engine: None, postgres_db: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    nodes = tmp_path / "nodes"
    from cryptography.fernet import Fernet

    yield {"CUMULUS_DB": postgres_db, "CUMULUS_NODES_DIR": str(nodes), "CUMULUS_LEASE_TTL_S": str(TTL_S),
           "CUMULUS_SECRET_KEY": Fernet.generate_key().decode(),  # every control plane of a cluster has it
           "CUMULUS_NODE_CPU_MILLIS": "2000", "CUMULUS_NODE_MEMORY_MIB": "1024",
           "CUMULUS_WATERMARK_WINDOW_S": "3", "CUMULUS_SCALE_DOWN_COOLDOWN_S": "600",
           "CUMULUS_ORPHAN_GRACE_S": "10"}
    for meta in nodes.glob("*/node.json"):  # whatever happened, leave no agent behind
        pid = json.loads(meta.read_text())["pid"]
        if pid and _alive(pid):
            os.kill(pid, signal.SIGTERM)


ARGS = ("--min-nodes", "1", "--max-nodes", "6")  # room to spare: no call waits on capacity


def _member(plat: RunningPlatform) -> dict[str, object]:
    return next(m for m in plat.get("/v1/control-planes") if m["self"])


def _leader_id(plat: RunningPlatform) -> str | None:
    leaders = [m["id"] for m in plat.get("/v1/control-planes") if m["leader"]]
    assert len(leaders) <= 1, leaders
    return str(leaders[0]) if leaders else None


def _kill(plat: RunningPlatform) -> float:
    plat.proc.send_signal(signal.SIGKILL)
    plat.proc.wait(30)
    return time.monotonic()


def _owned_containers(owner: str) -> list[object]:
    return list(docker_client().api.containers(filters={"label": f"{LABEL_OWNER}={owner}"}))


class Load:
    """Steady invocations of "echo", round robin over the control planes, recording outcomes."""

    def __init__(self, plats: list[RunningPlatform]) -> None:
        self.plats = plats  # replaced in place when one restarts
        self.stop = threading.Event()
        self.results: list[tuple[str, str, float]] = []  # (url, outcome, seconds)
        self.errors: list[str] = []  # the first error answers, for the failure message
        self.last_connection_error = ""

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            plat = self.plats[i % len(self.plats)]
            i += 1
            t = time.monotonic()
            try:
                resp = requests.post(f"{plat.url}/v1/functions/echo/invoke", data=b"{}", headers=plat.headers,
                                     timeout=CLIENT_TIMEOUT_S)
                outcome = "ok" if resp.status_code == 200 else f"http {resp.status_code}"
                if resp.status_code != 200 and len(self.errors) < 5:
                    self.errors.append(f"{plat.url}: {resp.status_code} {resp.text[:300]}")
            except requests.Timeout:
                outcome = "hung"
            except requests.RequestException as exc:
                outcome = "connection error"  # that control plane is down
                self.last_connection_error = f"{plat.url}: {exc!r}"
                time.sleep(0.05)
            self.results.append((plat.url, outcome, time.monotonic() - t))


def test_leader_sigkill_the_other_control_plane_takes_over(cluster: dict[str, str], tmp_path: Path) -> None:
    a = start_platform(tmp_path / "a", extra_env=cluster, args=ARGS)
    b = start_platform(tmp_path / "b", extra_env=cluster, args=ARGS, token=a.token)
    plats = [a, b]
    takeovers: list[float] = []
    load = Load(plats)
    loader = threading.Thread(target=load.run)
    try:
        a_id, b_id = str(_member(a)["id"]), str(_member(b)["id"])
        assert _leader_id(a) == _leader_id(b) == a_id
        wait_for(lambda: {m["id"] for m in a.get("/v1/control-planes")} == {a_id, b_id}, 10,
                 what="both control planes in the member list")
        shown = b.cli("control-planes")
        assert shown.returncode == 0, shown.stderr
        row = {m: next(line for line in shown.stdout.splitlines() if m in line) for m in (a_id, b_id)}
        assert "leader" in row[a_id] and "follower" in row[b_id] and "this one" in row[b_id], shown.stdout

        # One database: a deploy through A is served by B (B fetches the code from the database).
        a.deploy_ok("echo", ECHO)
        for plat in plats:
            resp = plat.invoke("echo", {"via": plat.url})
            assert resp.status_code == 200 and resp.json()["event"] == {"via": plat.url}, resp.text
        # Agents report to both: each sees the node, and the instances of the other.
        wait_for(lambda: all(len(p.get("/v1/nodes")) == 1 for p in plats), 10, what="the node on both")
        assert _owned_containers(a_id) and _owned_containers(b_id)
        loader.start()

        for round_ in range(2):
            leader, follower = (a, b) if round_ == 0 else (b, a)
            leader_id, follower_id = (a_id, b_id) if round_ == 0 else (b_id, a_id)
            assert _leader_id(follower) == leader_id
            killed_at = _kill(leader)
            wait_for(lambda: _leader_id(follower) == follower_id, 3 * TTL_S, interval=0.05,  # noqa: B023
                     what=f"{follower_id} to take over")
            takeovers.append(time.monotonic() - killed_at)

            # The new leader serves, and runs the fleet: a function that needs a second node.
            name = f"wide{round_}"
            follower.deploy_ok(name, ECHO, memory_mb=256, min_instances=5, max_instances=5)
            wait_for(lambda: follower.get(f"/v1/functions/{name}")["instances"] == 5, 90,  # noqa: B023
                     interval=0.5, what=f"{name}'s five instances, on a node the new leader adds")
            seen = len(load.results)
            wait_for(lambda: any(u == follower.url and o == "ok" for u, o, _ in load.results[seen:]),  # noqa: B023
                     30, what="calls under load answered by the new leader")
            # The dead leader's instances are removed once it is seen dead (3 TTLs).
            wait_for(lambda: not _owned_containers(leader_id), 3 * TTL_S + 15, interval=0.5,  # noqa: B023
                     what=f"the instances of the dead {leader_id} removed")

            # Restarted, the dead one joins as a follower.
            restarted = start_platform(leader.data_dir, extra_env=cluster, args=ARGS,
                                       port=int(leader.url.rsplit(":", 1)[1]), token=a.token)
            plats[plats.index(leader)] = restarted
            if leader is a:
                a = restarted
            else:
                b = restarted
            assert _leader_id(restarted) == follower_id
            resp = restarted.invoke("echo", {"after": "restart"})
            assert resp.status_code == 200, resp.text

        # No leak, no duplicate: the provider's nodes are the store's.
        provider = LocalProvider(Path(cluster["CUMULUS_NODES_DIR"]), "cumulus", bootstrap_for=None)  # type: ignore[arg-type]
        last: dict[str, object] = {}

        def converged() -> bool:
            listed = {n.id for n in provider.list_instances()}
            known = {n["id"] for n in a.get("/v1/nodes")}
            last.update(listed=listed, known=known)
            return listed == known == {n["id"] for n in b.get("/v1/nodes")}

        wait_for(converged, 30, interval=0.5, what=lambda: f"provider nodes == store nodes ({last})")
        time.sleep(2)  # calls after recovery, to both
        load.stop.set()
        loader.join(CLIENT_TIMEOUT_S + 10)
        outcomes = Counter(o for _, o, _ in load.results)
        print(f"ha: takeovers={len(takeovers)} takeover_s={[round(t, 2) for t in takeovers]} "
              f"ttl_s={TTL_S} nodes={len(last['listed'])} calls={dict(outcomes)}")  # type: ignore[arg-type]
        assert all(t < 2 * TTL_S for t in takeovers), takeovers
        # Every call ended (none hung); only calls to a dead control plane failed, by connection.
        assert "hung" not in outcomes and set(outcomes) <= {"ok", "connection error"}, (outcomes, load.errors)
        last_calls = load.results[-4:]
        assert [o for _, o, _ in last_calls] == ["ok"] * 4, (last_calls, load.last_connection_error)
    finally:
        load.stop.set()
        if loader.is_alive():
            loader.join(CLIENT_TIMEOUT_S + 10)
        for plat in plats:
            if plat.proc.poll() is None:
                plat.stop()
