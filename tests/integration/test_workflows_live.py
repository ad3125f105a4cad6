"""Workflows through `cumulus up`, a node agent and Docker: a state machine in YAML runs its Tasks'
functions (Choice, Map with MaxConcurrency, Retry, Catch) with its work queued in the database or on
NATS JetStream, its history is stored; a control plane
SIGKILLed during a Wait resumes and the Wait ends on time; a bus rule starts a workflow once per
event. The interpreter: tests/unit/test_asl_*.py; the executor's durability: tests/unit/
test_workflow_executor.py."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import RunningPlatform, start_platform, wait_for

pytestmark = pytest.mark.docker
# Small and brief: the integration tests share one platform, whose node has room for so many
# warm instances.
SMALL = {"memory_mb": 128, "keep_alive_s": 5}

ORDER_YAML = """
Comment: price an order, square its items, at most two at a time
StartAt: Price
States:
  Price:
    Type: Task
    Resource: wf-price
    ResultPath: $.price
    Next: Big
  Big:
    Type: Choice
    Choices:
      - Variable: $.price
        NumericGreaterThan: 100
        Next: Squares
    Default: Small
  Small:
    Type: Pass
    Result: small
    End: true
  Squares:
    Type: Map
    ItemsPath: $.items
    MaxConcurrency: 2
    ResultPath: $.squares
    ItemProcessor:
      StartAt: Square
      States:
        Square:
          Type: Task
          Resource: wf-square
          End: true
    Next: Risky
  Risky:
    Type: Task
    Resource: wf-fail
    Retry:
      - ErrorEquals: [HandlerError]
        IntervalSeconds: 1
        MaxAttempts: 1
    Catch:
      - ErrorEquals: [States.ALL]
        ResultPath: $.caught
        Next: Done
    End: true
  Done:
    Type: Succeed
"""


def _deploy_functions(plat: RunningPlatform) -> None:
    plat.deploy_ok("wf-price", {"main.py": "def handler(e, c):\n    return e['qty'] * 60\n"}, **SMALL)
    plat.deploy_ok("wf-square", {"main.py": "def handler(e, c):\n    return e * e\n"}, max_instances=4,
                   **SMALL)
    plat.deploy_ok("wf-fail", {"main.py": "def handler(e, c):\n    raise RuntimeError('always')\n"}, **SMALL)


def _ended(plat: RunningPlatform, execution: str, within_s: float = 120) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        found: dict[str, Any] = plat.get(f"/v1/executions/{execution}")
        return None if found["status"] == "RUNNING" else found
    return wait_for(ended, within_s, interval=0.2, what=f"execution {execution} to end")  # type: ignore[no-any-return]


def test_a_yaml_state_machine_runs_its_functions_and_keeps_its_history(queued: RunningPlatform,
                                                                       tmp_path: Path) -> None:
    platform = queued  # its Tasks and timers queued in the database, or on NATS JetStream
    _deploy_functions(platform)
    (tmp_path / "order.yaml").write_text(ORDER_YAML)
    deployed = platform.cli("workflow", "deploy", "order", str(tmp_path / "order.yaml"))
    assert deployed.returncode == 0, deployed.stderr
    order = json.dumps({"qty": 2, "items": [1, 2, 3]})
    started = platform.cli("workflow", "start", "order", "--input", order)
    assert started.returncode == 0, started.stderr
    execution = started.stdout.strip()
    done = _ended(platform, execution)
    assert done["status"] == "SUCCEEDED", done
    output = done["output"]
    assert output["price"] == 120 and output["squares"] == [1, 4, 9]
    assert output["caught"]["Error"] == "HandlerError" and "always" in output["caught"]["Cause"]
    events = platform.get(f"/v1/executions/{execution}/history")
    types = [e["type"] for e in events]
    assert types[0] == "ExecutionStarted" and types[-1] == "ExecutionSucceeded"
    assert types.count("TaskScheduled") >= 6  # price, three squares, risky twice
    shown = platform.cli("workflow", "history", execution)
    assert shown.returncode == 0 and "TaskScheduled" in shown.stdout
    small = platform.cli("workflow", "start", "order", "--input", json.dumps({"qty": 1, "items": []}))
    assert _ended(platform, small.stdout.strip())["output"] == "small"


def test_a_wait_across_a_control_plane_sigkill_ends_on_time(docker_engine: None, tmp_path: Path) -> None:
    plat = start_platform(tmp_path / "cp")
    try:
        after = {"main.py": "import time\n\ndef handler(e, c):\n    return time.time()\n"}
        plat.deploy_ok("wf-after", after, **SMALL)
        nap = {"StartAt": "Nap", "States": {"Nap": {"Type": "Wait", "Seconds": 8, "Next": "After"},
                                            "After": {"Type": "Task", "Resource": "wf-after", "End": True}}}
        assert requests.post(plat.url + "/v1/workflows", json={"name": "nap", "definition": nap},
                             headers=plat.headers, timeout=30).status_code == 201
        resp = requests.post(plat.url + "/v1/workflows/nap/executions", json={"input": {}},
                             headers=plat.headers, timeout=30)
        assert resp.status_code == 201, resp.text
        execution, started = resp.json()["id"], resp.json()["started_at"]
        time.sleep(1)
        port = int(plat.url.rsplit(":", 1)[1])
        plat.proc.send_signal(signal.SIGKILL)
        plat.proc.wait(30)
        time.sleep(2)
        plat = start_platform(tmp_path / "cp", port=port)
        done = _ended(plat, execution, within_s=60)
        assert done["status"] == "SUCCEEDED", done
        ran_at = done["output"]
        assert started + 8 <= ran_at <= started + 8 + 5, (started, ran_at)  # on time, give or take a start
    finally:
        plat.stop()


def test_a_bus_rule_starts_a_workflow_once_per_event(platform: RunningPlatform) -> None:
    echo = {"StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "End": True}}}
    headers = platform.headers
    assert requests.post(platform.url + "/v1/workflows", json={"name": "on-order", "definition": echo},
                         headers=headers, timeout=30).status_code == 201
    rule = requests.post(platform.url + "/v1/bus/rules", json={
        "name": "orders-flow", "pattern": {"source": ["wf-shop"]}, "target": "workflow:on-order"},
        headers=headers, timeout=30)
    assert rule.status_code == 201, rule.text
    entry = {"id": "evt-wf-1", "source": "wf-shop", "detail-type": "order", "detail": {"n": 7}}
    for _ in range(2):
        put = requests.post(platform.url + "/v1/bus/events", json={"entries": [entry]}, headers=headers,
                            timeout=30)
        assert put.status_code == 200, put.text
        assert put.json()["entries"][0]["matched_rules"] == ["orders-flow"]
    runs = wait_for(lambda: [x for x in platform.get("/v1/workflows/on-order/executions")
                             if x["status"] == "SUCCEEDED"], 60, interval=0.2, what="the workflow to run")
    assert len(runs) == 1 and runs[0]["output"]["detail"] == {"n": 7}
