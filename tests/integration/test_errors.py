"""Every failure of a function gets its own error type and status, and leaves no container behind
(through `cumulus up`, a node agent and Docker). What the API refuses before anything runs (bad zips
and settings, unknown functions, authentication) is tested in-process in `tests/api`."""

from __future__ import annotations

import pytest
import requests
from helpers import RunningPlatform, container_that_ran, containers_of, wait_for

pytestmark = pytest.mark.docker

OK = {"main.py": "def handler(event, context):\n    return {'ok': True}\n"}


def _error(resp: requests.Response, status: int, kind: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["type"] == kind, err
    assert isinstance(err["message"], str) and err["message"]
    return err  # type: ignore[no-any-return]


def _running(function: str) -> int:
    return len([c for c in containers_of(function) if c["State"] == "running"])


def test_handler_exception_returns_its_traceback(platform: RunningPlatform) -> None:
    platform.deploy_ok("raiser", {"main.py": "def handler(event, context):\n    raise ValueError('boom')\n"})
    err = _error(platform.invoke("raiser", {}), 500, "HandlerError")
    assert "ValueError: boom" in str(err["message"])
    assert any("raise ValueError('boom')" in line for line in err["traceback"])  # type: ignore[attr-defined]
    assert platform.invoke("raiser", {}).status_code == 500  # the instance survives its handler's errors
    assert _running("raiser") == 1


def test_timeout_stops_and_replaces_the_container(platform: RunningPlatform) -> None:
    code = {"main.py": "import time, socket\n\ndef handler(event, context):\n"
                       "    time.sleep(event['sleep'])\n    return socket.gethostname()\n"}
    platform.deploy_ok("slow", code, timeout_s=1)
    first_host = platform.invoke("slow", {"sleep": 0}).json()
    timed_out = container_that_ran("slow", first_host)  # the warm one, which the next call gets
    err = _error(platform.invoke("slow", {"sleep": 5}), 504, "FunctionTimeout")
    assert "1s" in str(err["message"])
    # The timed-out container is removed (a new instance may already stand in: the replacement).
    wait_for(lambda: timed_out not in {c["Id"] for c in containers_of("slow")}, 20,
             what="timed-out container to be removed")
    after = platform.invoke("slow", {"sleep": 0})
    assert after.status_code == 200 and after.json() != first_host  # a fresh instance


def test_memory_limit_kills_and_reports(platform: RunningPlatform) -> None:
    code = {"main.py": "def handler(event, context):\n    hog = bytearray(400 * 1024 * 1024)\n"
                       "    return len(hog)\n"}
    platform.deploy_ok("hog", code, memory_mb=64, keep_alive_s=0)  # no replacement kept warm
    err = _error(platform.invoke("hog", {}), 502, "FunctionOutOfMemory")
    assert "64 MiB" in str(err["message"])
    wait_for(lambda: not containers_of("hog"), 20, what="killed container to be removed")


def test_process_that_dies_is_reported_and_replaced(platform: RunningPlatform) -> None:
    code = {"main.py": "import os, socket\n\ndef handler(event, context):\n    if event.get('die'):\n"
                       "        os._exit(3)\n    return socket.gethostname()\n"}
    platform.deploy_ok("crasher", code)
    alive = platform.invoke("crasher", {})
    assert alive.status_code == 200, alive.text
    dying = container_that_ran("crasher", alive.json())
    err = _error(platform.invoke("crasher", {"die": True}), 502, "FunctionCrashed")
    assert "exit code 3" in str(err["message"])
    # The dead container is removed; a new instance may already stand in (the function's keep-alive
    # wants one warm), which is the replacement.
    wait_for(lambda: dying not in {c["Id"] for c in containers_of("crasher")}, 20,
             what="dead container to be removed")
    again = platform.invoke("crasher", {})
    assert again.status_code == 200 and not dying.startswith(again.json())  # another instance


def test_calls_beyond_max_wait_then_are_throttled(platform: RunningPlatform) -> None:
    from concurrent.futures import ThreadPoolExecutor

    code = {"main.py": "import time\n\ndef handler(event, context):\n    time.sleep(event['s'])\n"
                       "    return event['s']\n"}
    platform.deploy_ok("narrow", code, max_instances=1, timeout_s=60)
    assert platform.invoke("narrow", {"s": 0}).status_code == 200
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(platform.invoke, "narrow", {"s": 13})
        wait_for(lambda: platform.get("/v1/functions/narrow")["in_flight"] == 1, 10,
                 what="the slow call to take the only slot")
        throttled = platform.invoke("narrow", {"s": 0})
        _error(throttled, 429, "Throttled")
        assert slow.result().status_code == 200


def test_result_not_serializable(platform: RunningPlatform) -> None:
    platform.deploy_ok("unjson", {"main.py": "def handler(event, context):\n    return {1, 2}\n"})
    _error(platform.invoke("unjson", {}), 500, "ResultNotSerializable")
    assert _running("unjson") == 1


def test_import_error_in_function_is_reported(platform: RunningPlatform) -> None:
    platform.deploy_ok("broken", {"main.py": "import no_such_module\n\ndef handler(e, c):\n    return 1\n"})
    err = _error(platform.invoke("broken", {}), 500, "FunctionInitError")
    assert "no_such_module" in str(err["message"])


def test_payload_too_large(platform: RunningPlatform) -> None:
    platform.deploy_ok("bigin", OK)
    big = b'"' + b"x" * (6 * 1024 * 1024) + b'"'
    _error(platform.invoke("bigin", raw=big), 413, "PayloadTooLarge")
    assert platform.invoke("bigin", {}).status_code == 200


def test_payload_just_under_the_limit_is_accepted(platform: RunningPlatform) -> None:
    platform.deploy_ok("bigok", {"main.py": "def handler(event, context):\n    return len(event)\n"})
    event = "x" * (6 * 1024 * 1024 - 16)
    resp = platform.invoke("bigok", event)
    assert resp.status_code == 200 and resp.json() == len(event)


def test_event_that_is_not_json(platform: RunningPlatform) -> None:
    platform.deploy_ok("strict", OK)
    _error(platform.invoke("strict", raw=b"{nope"), 400, "InvalidEvent")
