"""The event bus through `cumulus up`, a node agent and Docker: rules route matching events (as
async calls) to functions, input transforms reshape them, the same event put twice reaches each
target once, TestEventPattern answers without routing, and bad patterns and events are 400s that
store nothing. The pattern language case by case: tests/unit/test_bus_patterns.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from helpers import RunningPlatform, wait_for

pytestmark = pytest.mark.docker
# Small and brief: the integration tests share one platform, whose node has room for so many
# warm instances.
SMALL = {"memory_mb": 128, "keep_alive_s": 5}

ECHO = {"main.py": "import json\n\ndef handler(event, context):\n"
                   "    print('event', json.dumps(event, sort_keys=True))\n    return event\n"}


def _events_of(platform: RunningPlatform, function: str, count: int) -> list[Any]:
    def got() -> list[Any] | None:
        calls = platform.get(f"/v1/functions/{function}/invocations?limit=1000")
        if len(calls) < count or any(c["state"] != "succeeded" for c in calls):
            return None
        logs = platform.get(f"/v1/functions/{function}/logs?limit=1000")
        lines = [line for r in logs for line in r["logs"].splitlines()]
        seen = [json.loads(line[6:]) for line in lines if line.startswith("event ")]
        return seen if len(seen) >= count else None
    return wait_for(got, 120, interval=0.2, what=f"{count} event(s) at {function}")  # type: ignore[no-any-return]


def _post(platform: RunningPlatform, path: str, body: Any) -> requests.Response:
    return requests.post(platform.url + path, json=body, headers=platform.headers, timeout=30)


def test_rules_route_matching_events_to_functions_transformed(platform: RunningPlatform) -> None:
    platform.deploy_ok("big-orders", ECHO, **SMALL)
    platform.deploy_ok("order-audit", ECHO, **SMALL)
    big = platform.cli("bus", "rule", "add", "big", "--target", "big-orders", "--pattern",
                       '{"source": ["shop"], "detail": {"total": [{"numeric": [">", 100]}]}}')
    assert big.returncode == 0, big.stderr
    audit = platform.cli("bus", "rule", "add", "audit", "--target", "order-audit",
                         "--pattern", '{"source": [{"prefix": "sh"}], "detail-type": ["order"]}',
                         "--input-path", "src=$.source", "--input-path", "total=$.detail.total",
                         "--input-template", '{"who": <src>, "total": <total>, "note": "total <total>"}')
    assert audit.returncode == 0, audit.stderr
    listed = platform.cli("bus", "rule", "ls")
    assert "big-orders" in listed.stdout and "order-audit" in listed.stdout

    put = platform.cli("bus", "put", "--source", "shop", "--detail-type", "order",
                       "--detail", '{"total": 150}')
    assert put.returncode == 0 and "big" in put.stdout and "audit" in put.stdout, put.stderr
    small = _post(platform, "/v1/bus/events", {"entries": [
        {"source": "shop", "detail-type": "order", "detail": json.dumps({"total": 5})},
        {"source": "elsewhere", "detail-type": "order", "detail": {"total": 500}}]})
    assert small.status_code == 200, small.text
    assert [e["matched_rules"] for e in small.json()["entries"]] == [["audit"], []]

    [event] = _events_of(platform, "big-orders", 1)
    assert event["source"] == "shop" and event["detail"] == {"total": 150}
    assert event["detail-type"] == "order" and event["account"] == "default" and event["id"]
    audited = _events_of(platform, "order-audit", 2)
    assert sorted(audited, key=lambda e: e["total"]) == [
        {"who": "shop", "total": 5, "note": "total 5"}, {"who": "shop", "total": 150, "note": "total 150"}]
    sources = {c["source"] for c in platform.get("/v1/functions/big-orders/invocations")}
    assert sources == {"rule:big"}


def test_the_same_event_put_twice_reaches_each_target_once(platform: RunningPlatform) -> None:
    platform.deploy_ok("once", ECHO, **SMALL)
    assert _post(platform, "/v1/bus/rules", {"name": "once", "pattern": {"source": ["twice"]},
                                             "target": "once"}).status_code == 201
    entry = {"id": "evt-0001", "source": "twice", "detail-type": "t", "detail": {"n": 1}}
    for _ in range(2):  # a client retrying a put whose answer it lost
        assert _post(platform, "/v1/bus/events", {"entries": [entry]}).status_code == 200
    _events_of(platform, "once", 1)
    assert len(platform.get("/v1/functions/once/invocations")) == 1


@pytest.mark.parametrize(("pattern", "event", "result"), [
    ({"detail": {"n": [{"numeric": [">=", 1, "<", 10]}]}}, {"source": "x", "detail": {"n": 3}}, True),
    ({"detail": {"n": [{"numeric": [">=", 1, "<", 10]}]}}, {"source": "x", "detail": {"n": 30}}, False),
    ({"source": [{"anything-but": ["x"]}]}, {"source": "x", "detail": {}}, False),
    ({"$or": [{"source": ["a"]}, {"detail": {"k": [{"exists": True}]}}]}, {"source": "x", "detail": {"k": 1}},
     True),
])
def test_test_pattern_answers_without_routing(platform: RunningPlatform, pattern: Any, event: Any,
                                              result: bool) -> None:
    resp = _post(platform, "/v1/bus/test-pattern", {"EventPattern": pattern, "Event": event})
    assert resp.status_code == 200 and resp.json() == {"result": result}, resp.text
    cli = platform.cli("bus", "test", json.dumps(pattern), json.dumps(event))
    assert cli.returncode == (0 if result else 1) and ("match" if result else "no match") in cli.stdout


@pytest.mark.parametrize(("path", "body", "status", "kind", "said"), [
    ("/v1/bus/test-pattern", {"EventPattern": {"source": "x"}, "Event": {}}, 400, "InvalidEventPattern",
     "array"),
    ("/v1/bus/test-pattern", {"EventPattern": {"n": [{"numeric": [">", "x"]}]}, "Event": {}}, 400,
     "InvalidEventPattern", "numeric"),
    ("/v1/bus/rules", {"name": "bad", "pattern": {"source": [{"wildcard": "a**"}]}, "target": "once"}, 400,
     "InvalidEventPattern", "wildcard"),
    ("/v1/bus/events", {"entries": [{"source": "x", "detail-type": "t"}]}, 400, "InvalidEvent", "detail"),
    ("/v1/bus/events", {"entries": [{"source": "x", "detail-type": "t", "detail": "{no"}]}, 400,
     "InvalidEvent", "JSON"),
])
def test_bad_patterns_and_events_are_400s_that_store_nothing(platform: RunningPlatform, path: str,
                                                             body: Any, status: int, kind: str,
                                                             said: str) -> None:
    platform.deploy_ok("once", ECHO, **SMALL)
    before = platform.get("/v1/bus/rules")
    resp = _post(platform, path, body)
    assert resp.status_code == status and resp.json()["error"]["type"] == kind, resp.text
    assert said in resp.json()["error"]["message"]
    assert platform.get("/v1/bus/rules") == before
