"""The event side on two control planes sharing one PostgreSQL database (HA), through `cumulus up`,
node agents and Docker: a schedule fires each of its times once (both control planes tick it); async
calls accepted by either run once each; a workflow whose control plane is SIGKILLed mid-Map is
finished by the other. The single-database logic: tests/unit/test_schedules.py (two schedulers
racing on a hand-driven clock), tests/contract/test_job_queue.py (takers on two control planes)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.fernet import Fernet
from helpers import RunningPlatform, start_platform, wait_for

from provisioners.local import _alive

pytestmark = [pytest.mark.docker, pytest.mark.pg]

ARGS = ("--min-nodes", "1", "--max-nodes", "3")
STAMP = {"main.py": "import time\n\ndef handler(event, context):\n    time.sleep(event.get('s', 0))\n"
                    "    return {'event': event, 'at': time.time()}\n"}
FAN = {"StartAt": "Fan", "States": {"Fan": {
    "Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 4, "End": True,
    "Iterator": {"StartAt": "Call", "States": {"Call": {"Type": "Task", "Resource": "stamp", "End": True,
                                                        "Parameters": {"s": 0.5, "item.$": "$"}}}}}}}


@pytest.fixture
def pair(docker_engine: None, postgres_db: str, tmp_path: Path) -> Iterator[list[RunningPlatform]]:
    env = {"CUMULUS_DB": postgres_db, "CUMULUS_NODES_DIR": str(tmp_path / "nodes"),
           "CUMULUS_LEASE_TTL_S": "3", "CUMULUS_SECRET_KEY": Fernet.generate_key().decode(),
           "CUMULUS_JOB_LEASE_S": "5", "CUMULUS_NODE_CPU_MILLIS": "2000", "CUMULUS_NODE_MEMORY_MIB": "1024"}
    a = start_platform(tmp_path / "a", extra_env=env, args=ARGS)
    b = start_platform(tmp_path / "b", extra_env=env, args=ARGS, token=a.token)
    plats = [a, b]
    try:
        yield plats
    finally:
        for p in plats:
            p.stop()
        for meta in (tmp_path / "nodes").glob("*/node.json"):
            pid = json.loads(meta.read_text())["pid"]
            if pid and _alive(pid):
                os.kill(pid, signal.SIGTERM)


def _calls(plat: RunningPlatform, name: str) -> list[dict[str, Any]]:
    return plat.get(f"/v1/functions/{name}/invocations?limit=1000")  # type: ignore[no-any-return]


def test_two_control_planes_fire_run_and_finish_each_thing_once(pair: list[RunningPlatform]) -> None:
    a, b = pair
    a.deploy_ok("stamp", STAMP, memory_mb=128, concurrency=4, keep_alive_s=60)

    # Async calls accepted by either control plane run once each.
    rids = [pair[n % 2].invoke("stamp", {"n": n}, kind="Event").json()["request_id"] for n in range(40)]
    wait_for(lambda: {c["request_id"] for c in _calls(b, "stamp") if c["state"] == "succeeded"} >= set(rids),
             120, interval=0.5, what="the 40 async calls to succeed")
    calls = {c["request_id"]: c for c in _calls(a, "stamp")}
    assert all(calls[r]["attempts"] == 1 and calls[r]["duplicates"] == 0 for r in rids)

    # A schedule ticked by both: each scheduled time fires once, none skipped.
    added = requests.post(a.url + "/v1/schedules", headers=a.headers, timeout=30, json={
        "name": "tick", "function": "stamp", "rate": "1s", "data": {"k": 1}})
    assert added.status_code == 201, added.text
    time.sleep(8)
    assert requests.delete(b.url + "/v1/schedules/tick", headers=b.headers, timeout=30).status_code == 204

    def fired() -> bool:
        runs = [c for c in _calls(a, "stamp") if c["source"] == "schedule:tick"]
        return bool(runs) and all(c["state"] == "succeeded" for c in runs)

    wait_for(fired, 60, interval=0.5, what="the schedule's firings to run")
    times = _scheduled_times(a)
    assert len(times) >= 5 and len(times) == len(set(times)), times  # never twice...
    # ...on its own times (a tick late by more than two would fire the latest missed: a gap, not a
    # double; none is expected here, but a loaded machine may make one)
    gaps = [y - x for x, y in itertools.pairwise(times)]
    assert all(g == pytest.approx(round(g)) and g >= 1 for g in gaps), times
    assert sum(g == pytest.approx(1.0) for g in gaps) >= len(gaps) - 1, times

    # A workflow started on A, A SIGKILLed mid-Map: B finishes it, each item's Task once.
    assert requests.post(a.url + "/v1/workflows", headers=a.headers, timeout=30,
                         json={"name": "fan", "definition": FAN}).status_code == 201
    started = requests.post(a.url + "/v1/workflows/fan/executions", headers=a.headers, timeout=30,
                            json={"input": {"items": list(range(12))}})
    assert started.status_code == 201, started.text
    execution = started.json()["id"]
    time.sleep(1.0)
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(30)

    def ended() -> dict[str, Any] | None:
        got: dict[str, Any] = b.get(f"/v1/executions/{execution}")
        return got if got["status"] != "RUNNING" else None

    done = wait_for(ended, 120, interval=0.5, what="the workflow to end on the other control plane")
    assert done["status"] == "SUCCEEDED", done
    assert [r["event"]["item"] for r in done["output"]] == list(range(12))
    history = b.get(f"/v1/executions/{execution}/history?limit=1000")
    succeeded = [e for e in history if e["type"] == "TaskSucceeded"]
    assert len(succeeded) == 12  # each item's Task once in the history, whoever ran it


def _scheduled_times(plat: RunningPlatform) -> list[float]:
    """The scheduled time of each firing: the end of its call's request id (its queue key,
    `schedule:<key>:<time>`)."""
    return sorted(float(c["request_id"].rsplit(":", 1)[1]) for c in _calls(plat, "stamp")
                  if c["source"] == "schedule:tick")
