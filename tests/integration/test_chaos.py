"""Chaos: SIGKILL the control plane under invocation load — at a random moment, mid-deploy, while a
node is being provisioned, and while a node that vanished (its agent SIGKILLed) is being replaced —
restart it each time, then check nothing acknowledged was lost, the provider's nodes equal the
store's (no leak, no duplicate), and every call ended (result or error, none hung past its timeout).
(A SIGKILLed agent whose machine stays is in test_agent_recovery.py; a killed VM in tests/vm.)"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from helpers import RunningPlatform, make_zip, start_platform, wait_for

from provisioners.local import LocalProvider

pytestmark = pytest.mark.docker

CALL_TIMEOUT_S = 5.0  # the functions' timeout
CLIENT_TIMEOUT_S = CALL_TIMEOUT_S + 30  # a call that outlives this has hung
ECHO = {"main.py": "import time\n\ndef handler(event, context):\n    time.sleep(event.get('s', 0))\n"
                   "    return event\n"}
ENV = {"CUMULUS_NODE_CPU_MILLIS": "2000", "CUMULUS_NODE_MEMORY_MIB": "1024",
       "CUMULUS_WATERMARK_WINDOW_S": "3", "CUMULUS_SCALE_DOWN_COOLDOWN_S": "30",
       "CUMULUS_ORPHAN_GRACE_S": "20"}
ARGS = ("--min-nodes", "1", "--max-nodes", "4")


def _error_type(resp: requests.Response) -> str:
    try:
        return str(resp.json()["error"]["type"])
    except (ValueError, KeyError, TypeError):
        return "?"


@dataclass
class Load:
    """Steady invocations in a thread, recording each call's outcome and duration."""

    plat: RunningPlatform
    stop: threading.Event = field(default_factory=threading.Event)
    results: list[tuple[str, float]] = field(default_factory=list)

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                resp = requests.post(f"{self.plat.url}/v1/functions/steady/invoke", data=b'{"s": 0.05}',
                                     headers=self.plat.headers, timeout=CLIENT_TIMEOUT_S)
                outcome = "ok" if resp.status_code == 200 else f"http {resp.status_code} {_error_type(resp)}"
            except requests.Timeout:
                outcome = "hung"
            except requests.RequestException:
                outcome = "connection error"
                time.sleep(0.1)
            self.results.append((outcome, time.monotonic() - t))


def _kill(plat: RunningPlatform) -> None:
    plat.proc.send_signal(signal.SIGKILL)
    plat.proc.wait(30)


def _restart(data_dir: Path, before: RunningPlatform) -> RunningPlatform:
    """Start again on the same port and data: the node agents keep reporting there."""
    return start_platform(data_dir, extra_env=ENV, args=ARGS, port=int(before.url.rsplit(":", 1)[1]))


def test_control_plane_sigkills_lose_nothing_and_leak_nothing(chaos_dir: Path) -> None:
    rng = random.Random(1234)
    plat = start_platform(chaos_dir, extra_env=ENV, args=ARGS)
    acknowledged: dict[str, int] = {}
    load = Load(plat)
    loader = threading.Thread(target=load.run)
    try:
        # Short keep-alives: instances started while a restarted control plane had not yet adopted
        # the running ones go away again, leaving room for "wide" below.
        acknowledged["steady"] = plat.deploy_ok("steady", ECHO, timeout_s=CALL_TIMEOUT_S,
                                                keep_alive_s=3)["version"]
        loader.start()
        kills = 0

        # 1. At a random moment.
        time.sleep(rng.uniform(0.5, 2.0))
        _kill(plat)
        kills += 1
        plat = load.plat = _restart(chaos_dir, plat)

        # 2. Mid-deploy: the deploy either was acknowledged (and must survive) or failed.
        outcome: dict[str, object] = {}

        def deploy() -> None:
            try:
                resp = requests.post(f"{plat.url}/v1/functions", headers=plat.headers, timeout=60,
                                     files={"code": ("c.zip", make_zip(ECHO), "application/zip")},
                                     data={"config": json.dumps({"name": "middeploy", "keep_alive_s": 3,
                                                                 "timeout_s": CALL_TIMEOUT_S})})
                outcome["status"] = resp.status_code
                if resp.status_code == 201:
                    outcome["version"] = resp.json()["version"]
            except requests.RequestException as exc:
                outcome["error"] = repr(exc)

        deployer = threading.Thread(target=deploy)
        deployer.start()
        time.sleep(rng.uniform(0.0, 0.05))
        _kill(plat)
        kills += 1
        deployer.join(60)
        if outcome.get("status") == 201:
            acknowledged["middeploy"] = int(str(outcome["version"]))
        plat = load.plat = _restart(chaos_dir, plat)

        # 3. While a node is being provisioned: demand more than one node holds.
        seen = len(plat.get("/v1/events?limit=1000"))
        # More 256 MiB instances than the nodes have room for now (earlier kills may have left
        # more nodes than one), so a node must be added. Room is sized once the restarted control
        # plane has adopted what the killed one started: until then a node's instances are on it
        # but not yet counted in its allocation.
        restarted = time.monotonic()
        settled: list[bool] = []
        seen_state: dict[str, object] = {}

        def adopted() -> bool:
            nodes = plat.get("/v1/nodes")
            functions = plat.get("/v1/functions")
            beat = all(n["last_heartbeat_s"] < time.monotonic() - restarted for n in nodes)
            on_nodes = sum(n["instances"] for n in nodes)
            in_pools = sum(f["instances"] + f["starting"] for f in functions)
            seen_state.update(nodes={n["id"]: (n["state"], n["instances"], n["last_heartbeat_s"])
                                     for n in nodes},
                              functions={f["name"]: (f["instances"], f["starting"]) for f in functions})
            settled.append(beat and on_nodes == in_pools)
            return settled[-2:] == [True, True]

        wait_for(adopted, 30, interval=0.5,
                 what=lambda: f"the running instances adopted after the restart ({seen_state})")
        nodes = plat.get("/v1/nodes")
        wide = sum(n["capacity"]["memory_mib"] - n["allocated"]["memory_mib"] for n in nodes) // 256 + 2
        acknowledged["wide"] = plat.deploy_ok("wide", ECHO, memory_mb=256, min_instances=wide,
                                              max_instances=wide, timeout_s=CALL_TIMEOUT_S)["version"]

        def provisioning() -> bool:
            return any(e["kind"] == "node_add" for e in plat.get("/v1/events?limit=1000")[seen:])

        wait_for(provisioning, 30, interval=0.05, what="a provision to start")
        _kill(plat)
        kills += 1
        plat = load.plat = _restart(chaos_dir, plat)

        # Let it converge: the instances of "wide" need one more node.
        wait_for(lambda: plat.get("/v1/functions/wide")["instances"] == wide, 90, interval=0.5,
                 what="the wide function's instances after recovery")

        # 4. A node vanishes under load (its agent SIGKILLed: for the local provider, the machine),
        # and the control plane is killed while the fleet replaces it.
        victim = max(plat.get("/v1/nodes"), key=lambda n: n["instances"])
        meta = json.loads((chaos_dir / "nodes" / victim["id"] / "node.json").read_text())
        os.kill(meta["pid"], signal.SIGKILL)
        gone_seen = len(plat.get("/v1/events?limit=1000"))

        def noticed() -> bool:
            return any(e["node_id"] == victim["id"] and e["kind"] in ("node_gone", "node_lost")
                       for e in plat.get("/v1/events?limit=1000")[gone_seen:])

        wait_for(noticed, 30, interval=0.1, what=f"the vanished node {victim['id']} noticed")
        _kill(plat)
        kills += 1
        plat = load.plat = _restart(chaos_dir, plat)
        wait_for(lambda: plat.get("/v1/functions/wide")["instances"] == wide, 90, interval=0.5,
                 what="the wide function's instances after the node vanished")
        assert victim["id"] not in {n["id"] for n in plat.get("/v1/nodes")}
        time.sleep(2)  # calls after recovery
        load.stop.set()
        loader.join(CLIENT_TIMEOUT_S + 10)
        assert not loader.is_alive()

        # Acknowledged functions and versions are there and answer.
        for name, version in acknowledged.items():
            assert plat.get(f"/v1/functions/{name}")["version"] >= version
            resp = plat.invoke(name, {"n": name})
            assert resp.status_code == 200 and resp.json() == {"n": name}, resp.text

        # The provider's nodes equal the store's: no leak, no duplicate.
        provider = LocalProvider(chaos_dir / "nodes", "cumulus", bootstrap_for=None)  # type: ignore[arg-type]

        last: dict[str, object] = {}

        def converged() -> bool:
            listed = {n.id for n in provider.list_instances()}
            known = {n["id"]: n["state"] for n in plat.get("/v1/nodes")}
            last.update(listed=listed, known=known)
            return listed == set(known) and len(listed) >= 2

        wait_for(converged, 60, interval=0.5, what=lambda: f"provider nodes == store nodes ({last})")

        # Every call ended with a result or an error; none hung.
        outcomes = [o for o, _ in load.results]
        assert "hung" not in outcomes
        assert max(d for _, d in load.results) < CLIENT_TIMEOUT_S
        assert outcomes.count("ok") > 10 and outcomes[-1] == "ok"
        from collections import Counter

        print(f"chaos: kills={kills} calls={len(outcomes)} outcomes={dict(Counter(outcomes))} "
              f"nodes={len(provider.list_instances())} leaked=0 duplicated=0")
    except AssertionError as exc:
        try:
            events = [(round(e["at"] % 1000, 1), e["kind"], e["node_id"], e["reason"])
                      for e in plat.get("/v1/events?limit=1000")][-40:]
            nodes = plat.get("/v1/nodes")
        except Exception as why:  # the platform may be down: say so, keep the original error
            events, nodes = [f"unavailable: {why!r}"], []
        raise AssertionError(f"{exc}\nnodes: {nodes}\nevents: {events}") from None
    finally:
        load.stop.set()
        if loader.is_alive():
            loader.join(CLIENT_TIMEOUT_S + 10)
        plat.stop()

