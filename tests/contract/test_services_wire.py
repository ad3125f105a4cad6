"""`context.services` between the real runtime shim (a process on this host, as in a container) and
the agent's real services socket (`node_agent.services.ServicesServer`): structured log entries in the
call's own logs, mail forwarded with the instance's identity and its answers (sent, refused with a
type and Retry-After, no control plane) raised as `ServiceError`, and the socket's bounds (body
size, connections, unknown paths). The control plane's side is a recording stand-in here: its own
tests are tests/unit/test_mail.py and tests/integration/test_services.py."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from helpers import run_shim

from node_agent import protocol as p
from node_agent.services import ServicesServer, error_body
from node_agent.shim import cumulus_wire as wire
from node_agent.shim_client import ShimClient

HANDLER = """
import json

def handler(event, context):
    s = context.services
    if event["do"] == "log":
        s.log("info", "order placed", order=42, who={"name": "ann"}, odd=object())
        s.log("warn", "low stock")
        print("plain print")
        return "logged"
    if event["do"] == "bad-level":
        s.log("loud", "x")
    if event["do"] == "fill":
        print("x" * (MAX_LOG_BYTES - 10))
        s.log("error", "does not fit")
        return "filled"
    if event["do"] == "mail":
        try:
            return {"id": s.mail.send(to=event.get("to", "ops@example.test"), subject="hi", body="b",
                                      bcc=["h@example.test"])}
        except s.Error as exc:
            return {"type": exc.type, "status": exc.status, "retry_after_s": exc.retry_after_s,
                    "message": exc.message}
    if event["do"] == "big-mail":
        try:
            s.mail.send(to="a@example.test", subject="s", body="x" * (600 * 1024))
        except s.Error as exc:
            return {"type": exc.type, "status": exc.status}
""".replace("MAX_LOG_BYTES", str(wire.MAX_LOG_BYTES))


class Agent:
    """The agent's side: a ServicesServer on its own event loop (a thread), forwarding to a
    recorder that answers what the test set."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.forwarded: list[tuple[str, bytes, dict[str, str]]] = []
        self.answer: tuple[int, bytes, dict[str, str]] = (202, b'{"message_id": "<m1@example.test>"}', {})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = ServicesServer(instance_id="shop-0123456789abcdef", function="acme/shop",
                                     forward=self._forward, max_connections=4)
        self.run(self.server.start(folder))

    def run(self, coro: Any) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(30)

    async def _forward(self, route: str, body: bytes,
                       headers: Mapping[str, str]) -> tuple[int, bytes, Mapping[str, str]]:
        self.forwarded.append((route, body, dict(headers)))
        return self.answer

    def close(self) -> None:
        self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    folder = tmp_path / "run-fn"
    folder.mkdir()
    a = Agent(folder)
    yield a
    a.close()


@pytest.fixture
def shim(tmp_path: Path, agent: Agent) -> Iterator[Path]:
    socket_path = str(agent.folder / wire.SERVICES_NAME)
    yield from run_shim(tmp_path, HANDLER, {"CUMULUS_SERVICES_SOCKET": socket_path})


def call(sock: Path, event: dict[str, Any]) -> tuple[str, str, Any]:
    """(outcome, logs, result) of one invocation."""
    async def once() -> tuple[dict[str, str], bytes]:
        client = ShimClient(str(sock))
        try:
            return await client.invoke(json.dumps(event).encode(), "req-7", 10_000)
        finally:
            client.close()

    headers, payload = asyncio.run(once())
    log_bytes = int(headers[p.LOG_BYTES_HEADER.lower()])
    return headers[p.OUTCOME_HEADER.lower()], payload[:log_bytes].decode(), json.loads(payload[log_bytes:])


def test_log_entries_are_json_lines_in_the_calls_own_logs(shim: Path) -> None:
    outcome, logs, result = call(shim, {"do": "log"})
    assert outcome == p.OK and result == "logged"
    first, second, plain = logs.splitlines()
    entry = json.loads(first)
    assert entry["level"] == "INFO" and entry["message"] == "order placed" and entry["request_id"] == "req-7"
    assert entry["fields"]["order"] == 42 and entry["fields"]["who"] == {"name": "ann"}
    assert entry["fields"]["odd"].startswith("<object object")  # not JSON: its repr
    assert entry["time"].endswith("Z") and "T" in entry["time"]
    assert json.loads(second)["level"] == "WARNING" and "fields" not in json.loads(second)
    assert plain == "plain print"


def test_an_unknown_level_is_the_handlers_error(shim: Path) -> None:
    outcome, _, error = call(shim, {"do": "bad-level"})
    assert outcome == p.HANDLER_ERROR and "unknown log level 'loud'" in error["message"]


def test_an_entry_over_the_log_bound_is_dropped_whole(shim: Path) -> None:
    outcome, logs, result = call(shim, {"do": "fill"})
    assert outcome == p.OK and result == "filled"
    assert "does not fit" not in logs and "[cumulus: output over" in logs


def test_mail_is_forwarded_as_the_instance_and_its_answer_returned(shim: Path, agent: Agent) -> None:
    outcome, _, result = call(shim, {"do": "mail"})
    assert outcome == p.OK and result == {"id": "<m1@example.test>"}
    [(route, body, headers)] = agent.forwarded
    assert route == p.MAIL_ROUTE
    assert json.loads(body) == {"to": "ops@example.test", "subject": "hi", "body": "b",
                                "bcc": ["h@example.test"]}
    assert headers[p.INSTANCE_HEADER] == "shop-0123456789abcdef" and headers[p.FUNCTION_HEADER] == "acme/shop"
    assert headers[p.REQUEST_ID_HEADER] == "req-7"


@pytest.mark.parametrize(("answer", "expected"), [
    ((429, error_body("QuotaExceeded", "tenant acme sent its 5 messages"), {"Retry-After": "3"}),
     {"type": "QuotaExceeded", "status": 429, "retry_after_s": 3.0}),
    ((503, error_body("MailNotConfigured", "no relay"), {}),
     {"type": "MailNotConfigured", "status": 503, "retry_after_s": None}),
    ((400, error_body("InvalidMail", "to: 'x' is not an email address"), {}),
     {"type": "InvalidMail", "status": 400, "retry_after_s": None}),
    ((502, b"<html>proxy error</html>", {}), {"type": "ServiceError", "status": 502, "retry_after_s": None}),
])
def test_a_refusal_is_a_typed_service_error(shim: Path, agent: Agent,
                                            answer: tuple[int, bytes, dict[str, str]],
                                            expected: dict[str, Any]) -> None:
    agent.answer = answer
    outcome, _, result = call(shim, {"do": "mail"})
    assert outcome == p.OK
    assert {k: result[k] for k in expected} == expected and result["message"]


def test_no_services_socket_is_service_unavailable(shim: Path, agent: Agent) -> None:
    agent.run(agent.server.close())
    (agent.folder / wire.SERVICES_NAME).unlink()
    outcome, _, result = call(shim, {"do": "mail"})
    assert outcome == p.OK and result["type"] == "ServiceUnavailable" and result["status"] == 503


def test_a_request_over_the_bound_is_refused_by_the_shim_and_by_the_agent(shim: Path, agent: Agent) -> None:
    assert call(shim, {"do": "big-mail"})[2] == {"type": "PayloadTooLarge", "status": 413}
    # A function may speak to the socket itself, past the shim: the agent bounds it too.
    status, body = _raw(agent.folder, "POST", wire.MAIL_PATH, b"x" * (wire.MAX_SERVICE_REQUEST_BYTES + 1))
    assert status == 413 and json.loads(body)["error"]["type"] == "PayloadTooLarge"
    status, body = _raw(agent.folder, "GET", "/etc/passwd", b"")
    assert status in (404, 405) and json.loads(body)["error"]["type"] in ("NotFound", "MethodNotAllowed")
    assert agent.forwarded == []


def test_the_socket_holds_at_most_its_connections(agent: Agent) -> None:
    path = str(agent.folder / wire.SERVICES_NAME)
    held = []
    for _ in range(12):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        held.append(s)
    time.sleep(0.3)
    alive = 0
    for s in held:
        s.settimeout(0.2)
        try:
            alive += s.recv(1) != b""  # a refused connection reads as closed at once
        except TimeoutError:
            alive += 1  # still open: no answer yet
        except OSError:
            pass
        s.close()
    assert alive <= 4 + 4  # the cap, and at most a backlog's worth more


def test_the_socket_is_the_functions_users_and_not_a_followed_link(agent: Agent, tmp_path: Path) -> None:
    st = os.lstat(agent.folder / wire.SERVICES_NAME)
    assert (st.st_uid, st.st_gid) == (65534, 65534)


def _raw(folder: Path, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    import http.client

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(str(folder / wire.SERVICES_NAME))

    conn = Conn("localhost", timeout=10)
    try:
        conn.request(method, path, body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()
