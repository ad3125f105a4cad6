"""The agent and the runtime shim agree on the wire: the real shim script, run as a function
container runs it (its own folder holding `cumulus_wire.py`, nothing else of Cumulus importable),
answers on a unix socket every outcome it knows, and the agent's `ShimClient` reads each one under
the names `node_agent.protocol` gives them. No Docker: the shim is a process on this host."""

from __future__ import annotations

import ast
import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run_shim

from control_plane.core import OUTCOME_STATUS
from node_agent import protocol as p
from node_agent.shim import cumulus_wire
from node_agent.shim_client import ShimAnswerTooLarge, ShimClient

HANDLER = """
import json

def handler(event, context):
    print("seen", json.dumps(event))
    if event == "raise":
        raise ValueError("boom")
    if event == "set":
        return {1, 2}
    if event == "huge":
        return "x" * (7 * 1024 * 1024)
    if event == "chatty":
        for _ in range(1000):
            print("é" * 1000)  # 2 MB of UTF-8 in all
        return "done"
    return {"echo": event, "request_id": context.request_id,
            "left_ms": context.get_remaining_time_in_millis()}
"""


@pytest.fixture
def shim(tmp_path: Path) -> Iterator[Path]:
    yield from run_shim(tmp_path, HANDLER)


def _call(sock: Path, body: bytes) -> tuple[str, str, object]:
    """(outcome, logs, result) as the agent reads an answer."""
    async def once() -> tuple[dict[str, str], bytes]:
        client = ShimClient(str(sock))
        try:
            return await client.invoke(body, "req-1", 5000)
        finally:
            client.close()

    headers, payload = asyncio.run(once())
    log_bytes = int(headers[p.LOG_BYTES_HEADER.lower()])
    assert int(headers[p.DURATION_HEADER.lower()]) >= 0
    return (headers[p.OUTCOME_HEADER.lower()], payload[:log_bytes].decode(), json.loads(payload[log_bytes:]))


def test_every_outcome_of_the_shim_reads_as_the_protocol_names_it(shim: Path) -> None:
    outcome, logs, result = _call(shim, b'"hi"')
    assert outcome == p.OK and logs == 'seen "hi"\n'
    assert isinstance(result, dict) and result["echo"] == "hi" and result["request_id"] == "req-1"
    assert 0 < result["left_ms"] <= 5000  # the deadline header reached the handler's context
    outcome, _, error = _call(shim, b'"raise"')
    assert outcome == p.HANDLER_ERROR and isinstance(error, dict) and error["type"] == p.HANDLER_ERROR
    assert _call(shim, b'"set"')[0] == p.NOT_SERIALIZABLE
    assert _call(shim, b"{not json")[0] == p.INVALID_EVENT
    assert _call(shim, b"[" * 100_000)[0] == p.INVALID_EVENT  # too deep for the parser: not a crash
    outcome, _, error = _call(shim, b'"huge"')
    assert outcome == p.RESPONSE_TOO_LARGE and isinstance(error, dict) and "limit" in error["message"]
    outcome, logs, result = _call(shim, b'"chatty"')
    assert outcome == p.OK and result == "done"
    kept, _, note = logs.encode().partition(b"\n[cumulus: output over")
    limit = cumulus_wire.MAX_LOG_BYTES
    assert limit - 4 < len(kept) <= limit and note  # counted in bytes, not characters
    assert _call(shim, b'"hi"')[0] == p.OK  # the instance serves on


def test_an_import_failure_is_the_init_outcome(tmp_path: Path) -> None:
    for sock in run_shim(tmp_path, "import no_such_module\n"):
        outcome, _, error = _call(sock, b"{}")
        assert outcome == p.INIT_ERROR and isinstance(error, dict) and "no_such_module" in error["message"]


def test_the_protocol_is_one_definition_the_control_plane_maps_completely() -> None:
    assert set(p.SHIM_OUTCOMES) == {p.OK, p.HANDLER_ERROR, p.NOT_SERIALIZABLE, p.INVALID_EVENT, p.INIT_ERROR,
                                    p.RESPONSE_TOO_LARGE}
    assert p.OUTCOME_HEADER is cumulus_wire.OUTCOME_HEADER and p.OK is cumulus_wire.OK
    failures = set(p.SHIM_OUTCOMES + p.AGENT_OUTCOMES) - {p.OK, p.INSTANCE_NOT_FOUND}
    assert failures == set(OUTCOME_STATUS), "every failure the caller can see has its HTTP status"
    tree = ast.parse(Path(cumulus_wire.__file__ or "").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)], \
        "the wire module is mounted alone into containers: it imports nothing"


def test_the_agent_does_not_read_an_answer_over_the_limit(tmp_path: Path) -> None:
    """Whatever runs in the container (the function can replace the shim), an answer announcing more
    than MAX_ANSWER_BYTES is refused unread."""
    import socket
    import threading

    sock_path = tmp_path / "liar.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.listen()

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Cumulus-Outcome: ok\r\nContent-Length: 1073741824\r\n\r\n")
            for _ in range(100):  # bounded: it would send 1 GB
                conn.sendall(b"x" * (1 << 20))
        except OSError:
            pass  # the agent hung up, as it should
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    async def once() -> None:
        client = ShimClient(str(sock_path))
        with pytest.raises(ShimAnswerTooLarge):
            await client.invoke(b"{}", "r", 1000)
        client.close()

    asyncio.run(once())
    thread.join(10)
    assert not thread.is_alive()
    server.close()
