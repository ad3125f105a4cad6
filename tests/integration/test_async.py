"""Async calls through `cumulus up`, a node agent and Docker: 202 at once and the call runs later;
retries, the dead-letter queue and its redrive; calls beyond a function's instances wait instead of
failing; destinations; and what the door refuses before queueing anything. The logic in detail,
without Docker: tests/unit/test_async_calls.py; the queue's contract: tests/contract/test_job_queue.py."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from helpers import RunningPlatform, wait_for

pytestmark = pytest.mark.docker
# Small and brief: the integration tests share one platform, whose node has room for so many
# warm instances.
SMALL = {"memory_mb": 128, "keep_alive_s": 5}

ECHO = {"main.py": "import os\n\ndef handler(event, context):\n"
                   "    print('got', context.aws_request_id, event)\n    return event\n"}


def _calls(platform: RunningPlatform, name: str, **query: str) -> list[dict[str, Any]]:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return platform.get(f"/v1/functions/{name}/invocations?limit=1000&{params}")  # type: ignore[no-any-return]


def _ended(platform: RunningPlatform, name: str, count: int) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        calls = _calls(platform, name)
        ended = [c for c in calls if c["state"] in ("succeeded", "failed", "dead_lettered")]
        return calls if len(ended) >= count else None
    return wait_for(done, 120, interval=0.2, what=f"{count} async call(s) of {name} to end")  # type: ignore[no-any-return]


def test_an_async_call_is_accepted_at_once_and_runs(queued: RunningPlatform) -> None:
    queued.deploy_ok("later", ECHO, **SMALL)
    started = time.monotonic()
    resp = queued.invoke("later", {"n": 1}, kind="Event")
    assert resp.status_code == 202, resp.text
    rid = resp.json()["request_id"]
    assert resp.headers["X-Request-Id"] == rid and time.monotonic() - started < 5
    [call] = _ended(queued, "later", 1)
    assert (call["request_id"], call["state"], call["attempts"]) == (rid, "succeeded", 1)
    assert call["source"] == "api"
    logs = queued.get("/v1/functions/later/logs")
    assert any(r["request_id"] == rid and f"got {rid}" in r["logs"] for r in logs)
    # The CLI shows it; `invoke --async` queues another.
    shown = queued.cli("invocations", "later")
    assert shown.returncode == 0 and rid in shown.stdout and "succeeded" in shown.stdout, shown.stderr
    sent = queued.cli("invoke", "later", "--async", "-d", '{"n": 2}')
    assert sent.returncode == 0 and json.loads(sent.stdout)["status"] == "queued", sent.stderr
    assert len(_ended(queued, "later", 2)) == 2


def test_a_failing_call_is_retried_then_dead_lettered_and_redriven_once_fixed(
        queued: RunningPlatform) -> None:
    fail = {"main.py": "def handler(event, context):\n"
                       "    raise RuntimeError('not yet ' + context.aws_request_id)\n"}
    queued.deploy_ok("flaky", fail, max_retries=1, **SMALL)
    rid = queued.invoke("flaky", {"keep": "me"}, kind="Event").json()["request_id"]
    [call] = _ended(queued, "flaky", 1)
    assert (call["state"], call["attempts"]) == ("dead_lettered", 2)
    assert call["error"]["type"] == "HandlerError" and f"not yet {rid}-2" in call["error"]["message"]
    [letter] = queued.get("/v1/functions/flaky/dlq")
    assert (letter["request_id"], letter["reason"], json.loads(letter["event"])) == (
        rid, "retries_exhausted", {"keep": "me"})
    listed = queued.cli("dlq", "ls", "flaky")
    assert listed.returncode == 0 and rid in listed.stdout and "retries_exhausted" in listed.stdout
    queued.deploy_ok("flaky", ECHO, max_retries=1, **SMALL)  # fixed
    redriven = queued.cli("dlq", "redrive", "flaky")
    assert redriven.returncode == 0 and "queued 1 dead letter" in redriven.stdout, redriven.stderr
    wait_for(lambda: _calls(queued, "flaky")[0]["state"] == "succeeded", 120, interval=0.2,
             what="the redriven call to succeed")
    assert queued.get("/v1/functions/flaky/dlq") == []
    assert _calls(queued, "flaky")[0]["attempts"] == 1


def test_calls_beyond_the_functions_instances_wait_and_none_fails(queued: RunningPlatform) -> None:
    slow = {"main.py": "import time\n\ndef handler(event, context):\n    time.sleep(1)\n    return event\n"}
    queued.deploy_ok("narrow", slow, max_instances=1, concurrency=1, max_retries=0, **SMALL)
    rids = {queued.invoke("narrow", {"i": i}, kind="Event").json()["request_id"] for i in range(6)}
    calls = _ended(queued, "narrow", 6)
    assert {c["request_id"] for c in calls} == rids
    assert all(c["state"] == "succeeded" and c["attempts"] == 1 for c in calls), calls


def test_destinations_get_a_record_of_success_and_of_failure(queued: RunningPlatform) -> None:
    queued.deploy_ok("audit", ECHO, **SMALL)
    queued.deploy_ok("works", ECHO, on_success="function:audit", **SMALL)
    queued.deploy_ok("breaks", {"main.py": "def handler(event, context):\n    raise ValueError('no')\n"},
                       max_retries=0, on_failure="function:audit", **SMALL)
    good = queued.invoke("works", {"x": 1}, kind="Event").json()["request_id"]
    bad = queued.invoke("breaks", {"x": 2}, kind="Event").json()["request_id"]
    records = _ended(queued, "audit", 2)
    assert {c["source"] for c in records} == {f"destination:{good}", f"destination:{bad}"}
    assert _calls(queued, "breaks")[0]["state"] == "failed"  # to its destination, not the DLQ
    assert queued.get("/v1/functions/breaks/dlq") == []
    logs = "".join(r["logs"] for r in queued.get("/v1/functions/audit/logs"))
    assert "'condition': 'Success'" in logs and "'condition': 'RetriesExhausted'" in logs
    assert "'responsePayload': {'x': 1}" in logs


@pytest.mark.parametrize(("name", "body", "kind", "status", "error"), [
    ("nowhere", b"{}", "Event", 404, "FunctionNotFound"),
    ("later", b"{not json", "Event", 400, "InvalidEvent"),
    ("later", b'"' + b"x" * 300_000 + b'"', "Event", 413, "PayloadTooLarge"),
    ("later", b"{}", "Sometime", 400, "InvalidRequest"),
])
def test_the_door_refuses_before_queueing(platform: RunningPlatform, name: str, body: bytes, kind: str,
                                          status: int, error: str) -> None:
    platform.deploy_ok("later", ECHO, **SMALL)
    before = len(_calls(platform, "later"))
    resp = platform.invoke(name, raw=body, kind=kind)
    assert resp.status_code == status and resp.json()["error"]["type"] == error, resp.text
    assert len(_calls(platform, "later")) == before


def test_a_dry_run_checks_the_caller_and_runs_nothing(platform: RunningPlatform) -> None:
    platform.deploy_ok("later", ECHO, **SMALL)
    before = len(platform.get("/v1/functions/later/logs"))
    resp = platform.invoke("later", {}, kind="DryRun")
    assert resp.status_code == 204 and resp.content == b""
    assert len(platform.get("/v1/functions/later/logs")) == before
