"""The Lambda Runtime API server (`node_agent.runtime_api`), driven over loopback by a client that
behaves like a Lambda runtime: it long-polls /invocation/next and answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from node_agent.runtime_api import (
    CRASHED,
    RuntimeApiClosed,
    RuntimeApiInitError,
    RuntimeApiSession,
)
from node_agent.shim import cumulus_wire as wire

ARN_PREFIX = "arn:cumulus:lambda:local:000000000000:function"


@dataclass
class Runtime:
    """A client that plays the function's runtime against one session."""

    session: RuntimeApiSession
    http: aiohttp.ClientSession
    base: str  # http://127.0.0.1:PORT/2018-06-01/runtime
    port: int

    async def next(self) -> tuple[int, dict[str, str], bytes]:
        async with self.http.get(f"{self.base}/invocation/next") as resp:
            return resp.status, dict(resp.headers), await resp.read()

    async def post(self, path: str, body: Any = b"", headers: dict[str, str] | None = None
                   ) -> tuple[int, Any]:
        async with self.http.post(f"{self.base}/{path}", data=body, headers=headers) as resp:
            return resp.status, json.loads(await resp.read())

    async def respond(self, request_id: str, body: bytes) -> tuple[int, Any]:
        return await self.post(f"invocation/{request_id}/response", body)

    async def error(self, request_id: str, body: bytes, error_type: str = "Unhandled") -> tuple[int, Any]:
        return await self.post(f"invocation/{request_id}/error", body,
                               {"Lambda-Runtime-Function-Error-Type": error_type})


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


@contextlib.asynccontextmanager
async def serving(**kwargs: Any) -> AsyncIterator[Runtime]:
    """A started session on a fresh loopback socket, and a runtime client for it."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    session = RuntimeApiSession(function="fn", version=3, memory_mib=128, **kwargs)
    await session.start(sock)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            yield Runtime(session, http, f"http://127.0.0.1:{port}/2018-06-01/runtime", port)
    finally:
        await session.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run one scenario with a hard bound (each one takes well under a second)."""

    async def bounded() -> None:
        async with asyncio.timeout(5):
            await scenario()

    asyncio.run(bounded())


async def until(predicate: Callable[[], bool]) -> None:
    """Wait for a state the session has no event for (a test's view only)."""
    while not predicate():  # noqa: ASYNC110 - polling what the code under test does not signal
        await asyncio.sleep(0.002)


def test_ok_round_trip() -> None:
    async def scenario() -> None:
        async with serving() as rt:
            assert not rt.session.ready
            call = asyncio.create_task(rt.session.invoke(b'{"n": 1}', "req-1", 3000))
            invoked_at_ms = time.time() * 1000
            status, headers, body = await rt.next()
            assert status == 200
            assert body == b'{"n": 1}'
            assert headers["Lambda-Runtime-Aws-Request-Id"] == "req-1"
            assert abs(int(headers["Lambda-Runtime-Deadline-Ms"]) - (invoked_at_ms + 3000)) < 500
            assert headers["Lambda-Runtime-Invoked-Function-Arn"] == f"{ARN_PREFIX}:fn"
            assert headers["Lambda-Runtime-Trace-Id"].startswith("Root=1-")
            assert headers["Content-Type"].startswith("application/json")
            assert rt.session.ready
            await rt.session.wait_ready(0.1)
            assert rt.session.in_flight == 1
            assert await rt.respond("req-1", b'{"answer": 42}') == (202, {"status": "OK"})
            assert await call == (wire.OK, b'{"answer": 42}')
            assert rt.session.in_flight == 0

    run(scenario)


def test_response_bytes_are_kept_exactly() -> None:
    async def scenario() -> None:
        async with serving() as rt:
            payload = b'  {"b": "\xc3\xa9"}\n'  # not re-encoded: whitespace and UTF-8 kept
            call = asyncio.create_task(rt.session.invoke(b"{}", "r", 1000))
            _, headers, _ = await rt.next()
            await rt.respond(headers["Lambda-Runtime-Aws-Request-Id"], payload)
            assert await call == (wire.OK, payload)

    run(scenario)


def test_unsafe_or_reused_request_ids_are_replaced() -> None:
    async def scenario() -> None:
        async with serving(concurrency=2) as rt:
            first = asyncio.create_task(rt.session.invoke(b"{}", "a/b", 1000))
            second = asyncio.create_task(rt.session.invoke(b"{}", "", 1000))
            ids = [(await rt.next())[1]["Lambda-Runtime-Aws-Request-Id"] for _ in range(2)]
            for rid in ids:
                uuid.UUID(rid)  # a fresh UUID each, not the caller's id
                await rt.respond(rid, b"1")
            assert await first == (wire.OK, b"1") and await second == (wire.OK, b"1")
            # A finished id is not given to the runtime again (a late answer to the first call
            # must not count for the second).
            again = asyncio.create_task(rt.session.invoke(b"{}", "same", 1000))
            _, headers, _ = await rt.next()
            assert headers["Lambda-Runtime-Aws-Request-Id"] == "same"
            await rt.respond("same", b"1")
            await again
            third = asyncio.create_task(rt.session.invoke(b"{}", "same", 1000))
            _, headers, _ = await rt.next()
            assert headers["Lambda-Runtime-Aws-Request-Id"] != "same"
            assert (await rt.respond("same", b"late"))[0] == 400
            await rt.respond(headers["Lambda-Runtime-Aws-Request-Id"], b"2")
            assert await third == (wire.OK, b"2")

    run(scenario)


def test_handler_error_in_awslambdaric_shape() -> None:
    async def scenario() -> None:
        async with serving() as rt:
            call = asyncio.create_task(rt.session.invoke(b"{}", "req-e", 1000))
            await rt.next()
            report = {"errorMessage": "division by zero", "errorType": "ZeroDivisionError",
                      "requestId": "req-e",
                      "stackTrace": ['  File "/var/task/app.py", line 2, in handler\n    return 1 / 0\n']}
            assert await rt.error("req-e", json.dumps(report).encode()) == (202, {"status": "OK"})
            outcome, payload = await call
            assert outcome == wire.HANDLER_ERROR
            assert json.loads(payload) == {
                "type": wire.HANDLER_ERROR, "message": "ZeroDivisionError: division by zero",
                "errorType": "ZeroDivisionError", "errorMessage": "division by zero",
                "stackTrace": report["stackTrace"]}

    run(scenario)


def test_error_type_from_header_and_garbage_bodies() -> None:
    async def scenario() -> None:
        async with serving() as rt:
            call = asyncio.create_task(rt.session.invoke(b"{}", "no-type", 1000))
            await rt.next()
            await rt.error("no-type", b'{"errorMessage": "bad input"}', "Runtime.UserError")
            error = json.loads((await call)[1])
            assert error["errorType"] == "Runtime.UserError"
            assert error["message"] == "Runtime.UserError: bad input"

            call = asyncio.create_task(rt.session.invoke(b"{}", "garbage", 1000))
            await rt.next()
            assert (await rt.error("garbage", b"\x00\xffsegfault?", "Runtime.Crash"))[0] == 202
            outcome, payload = await call
            error = json.loads(payload)
            assert outcome == wire.HANDLER_ERROR
            assert error["type"] == wire.HANDLER_ERROR
            assert error["errorType"] == "Runtime.Crash"
            assert "not a JSON object" in error["message"] and "segfault" in error["message"]
            assert error["stackTrace"] == []

            call = asyncio.create_task(rt.session.invoke(b"{}", "list", 1000))
            await rt.next()
            await rt.post("invocation/list/error", b"[1, 2]")  # JSON, but not an object; no header
            error = json.loads((await call)[1])
            assert "not a JSON object" in error["message"] and error["errorType"] == ""

    run(scenario)


def test_init_error_before_first_next() -> None:
    async def scenario() -> None:
        async with serving() as rt:
            pending = asyncio.create_task(rt.session.invoke(b"{}", "early", 1000))
            ready = asyncio.create_task(rt.session.wait_ready(2))
            await asyncio.sleep(0.01)
            report = {"errorMessage": "Unable to import module 'app': No module named 'app'",
                      "errorType": "Runtime.ImportModuleError", "requestId": "", "stackTrace": []}
            status, body = await rt.post("init/error", json.dumps(report).encode(),
                                         {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"})
            assert (status, body) == (202, {"status": "OK"})
            with pytest.raises(RuntimeApiInitError) as raised:
                await ready
            assert raised.value.error["errorType"] == "Runtime.ImportModuleError"
            assert raised.value.error["type"] == wire.INIT_ERROR
            assert str(raised.value).startswith("Runtime.ImportModuleError: Unable to import")
            outcome, payload = await pending
            assert outcome == wire.INIT_ERROR and payload == raised.value.payload
            assert await rt.session.invoke(b"{}", "later", 1000) == (wire.INIT_ERROR, payload)
            # The container then dies (awslambdaric exits 1): the init error stays the answer.
            rt.session.fail(CRASHED, "exit code 1")
            assert (await rt.session.invoke(b"{}", "after-exit", 1000))[0] == wire.INIT_ERROR
            # As on Lambda: no second init error, no /next after one.
            status, body = await rt.post("init/error", b"{}")
            assert status == 403 and body["errorType"] == "InvalidStateTransition"
            status, _, raw = await rt.next()
            assert status == 403 and json.loads(raw)["errorType"] == "InvalidStateTransition"
            assert not rt.session.ready

    run(scenario)


def test_init_error_after_first_next_is_refused() -> None:
    async def scenario() -> None:
        async with serving() as rt:
            call = asyncio.create_task(rt.session.invoke(b"{}", "r", 1000))
            await rt.next()
            status, body = await rt.post("init/error", b'{"errorType": "Late", "errorMessage": "x"}')
            assert status == 403 and body["errorType"] == "InvalidStateTransition"
            await rt.respond("r", b"{}")
            assert (await call)[0] == wire.OK

    run(scenario)


def test_response_too_large_is_refused_without_keeping_it() -> None:
    limit = 64 * 1024

    async def scenario() -> None:
        async with serving(max_response_bytes=limit) as rt:
            # Announced by Content-Length: refused without reading it.
            call = asyncio.create_task(rt.session.invoke(b"{}", "big", 1000))
            await rt.next()
            status, body = await rt.respond("big", b"x" * (limit + 1))
            assert status == 413 and body["errorType"] == "RequestEntityTooLarge"
            outcome, payload = await call
            assert outcome == wire.RESPONSE_TOO_LARGE
            assert json.loads(payload)["type"] == wire.RESPONSE_TOO_LARGE
            assert str(limit) in json.loads(payload)["message"]

            # Chunked, with no length: read up to the bound only, while 4 MiB stream in.
            call = asyncio.create_task(rt.session.invoke(b"{}", "stream", 1000))
            await rt.next()
            chunk = b"y" * (64 * 1024)

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(64):
                    yield chunk

            tracemalloc.start()
            try:
                status, body = await rt.respond("stream", chunks())  # type: ignore[arg-type]
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert status == 413
            assert (await call)[0] == wire.RESPONSE_TOO_LARGE
            assert peak < 2 * 1024 * 1024, f"peak {peak} bytes while 4 MiB were sent"

            # A response just at the bound is fine.
            call = asyncio.create_task(rt.session.invoke(b"{}", "fits", 1000))
            await rt.next()
            assert (await rt.respond("fits", b"z" * limit))[0] == 202
            assert await call == (wire.OK, b"z" * limit)

    run(scenario)


def test_unknown_and_double_answers_get_400() -> None:
    async def scenario() -> None:
        async with serving() as rt:
            status, body = await rt.respond("nobody", b"{}")
            assert (status, body["errorType"]) == (400, "InvalidRequestID")
            assert (await rt.error("nobody", b"{}"))[0] == 400
            call = asyncio.create_task(rt.session.invoke(b"{}", "once", 1000))
            await rt.next()
            assert (await rt.respond("once", b"1"))[0] == 202
            status, body = await rt.respond("once", b"2")
            assert (status, body["errorType"]) == (400, "InvalidRequestID")
            assert (await rt.error("once", b"{}"))[0] == 400
            assert await call == (wire.OK, b"1")

    run(scenario)


def test_queued_but_not_delivered_cannot_be_answered() -> None:
    async def scenario() -> None:
        async with serving() as rt:
            call = asyncio.create_task(rt.session.invoke(b"{}", "queued", 1000))
            await until(lambda: rt.session.in_flight == 1)
            assert (await rt.respond("queued", b"1"))[0] == 400
            _, headers, _ = await rt.next()
            await rt.respond(headers["Lambda-Runtime-Aws-Request-Id"], b"2")
            assert await call == (wire.OK, b"2")

    run(scenario)


def test_cancelled_invoke_is_dropped_and_its_late_answer_refused() -> None:
    async def scenario() -> None:
        async with serving() as rt:
            # Cancelled while running (the caller's timeout).
            call = asyncio.create_task(rt.session.invoke(b"{}", "slow", 1000))
            await rt.next()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await call
            assert rt.session.in_flight == 0
            status, body = await rt.respond("slow", b"too late")
            assert (status, body["errorType"]) == (400, "InvalidRequestID")
            # Cancelled while queued: the runtime never sees it, it gets the next one instead.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(rt.session.invoke(b'"dropped"', "queued", 1000), 0.02)
            call = asyncio.create_task(rt.session.invoke(b'"kept"', "kept", 1000))
            _, headers, body_seen = await rt.next()
            assert headers["Lambda-Runtime-Aws-Request-Id"] == "kept" and body_seen == b'"kept"'
            await rt.respond("kept", b"1")
            assert await call == (wire.OK, b"1")

    run(scenario)


def test_fail_answers_waiting_and_running_invocations() -> None:
    async def scenario() -> None:
        async with serving(concurrency=2) as rt:
            running = asyncio.create_task(rt.session.invoke(b"{}", "running", 1000))
            await rt.next()
            queued = asyncio.create_task(rt.session.invoke(b"{}", "queued", 1000))
            poll = asyncio.create_task(rt.next())
            await until(lambda: rt.session.in_flight == 2)
            await asyncio.sleep(0.01)
            rt.session.fail(CRASHED, "the function's process died (exit code 137)")
            for call in (running, queued):
                outcome, payload = await call
                assert outcome == CRASHED
                assert json.loads(payload) == {"type": CRASHED,
                                               "message": "the function's process died (exit code 137)"}
            assert rt.session.in_flight == 0
            status, _, _ = await poll  # the poll that took "queued" or waited: it ends either way
            assert status in (200, 410)
            assert (await rt.session.invoke(b"{}", "after", 1000))[0] == CRASHED
            assert (await rt.next())[0] == 410
            assert (await rt.respond("running", b"{}"))[0] == 400

    run(scenario)


def test_fail_before_ready_ends_wait_ready() -> None:
    async def scenario() -> None:
        async with serving() as rt:
            ready = asyncio.create_task(rt.session.wait_ready(2))
            await asyncio.sleep(0.01)
            rt.session.fail(CRASHED, "exited during start")
            with pytest.raises(RuntimeApiClosed) as raised:
                await ready
            assert raised.value.outcome == CRASHED and raised.value.message == "exited during start"
            with pytest.raises(TimeoutError):
                await RuntimeApiSession(function="f", version=1, memory_mib=1).wait_ready(0.01)

    run(scenario)


def test_close_ends_a_pending_long_poll() -> None:
    async def scenario() -> None:
        async with serving() as rt:
            poll = asyncio.create_task(rt.next())
            await rt.session.wait_ready(1)
            await asyncio.sleep(0.01)
            started = time.monotonic()
            call = asyncio.create_task(rt.session.invoke(b"{}", "x", 1000))
            await asyncio.sleep(0)
            await rt.session.close()
            status, _, _ = await poll
            assert time.monotonic() - started < 0.5
            # The poll got either the event (then the invoke is answered CRASHED) or 410.
            assert status in (200, 410)
            assert (await call)[0] == CRASHED
            poll2_status = None
            with contextlib.suppress(aiohttp.ClientConnectionError):
                poll2_status = (await rt.next())[0]
            assert poll2_status is None  # the socket is closed

    run(scenario)


def test_close_with_an_idle_long_poll() -> None:
    async def scenario() -> None:
        async with serving() as rt:
            poll = asyncio.create_task(rt.next())
            await rt.session.wait_ready(1)
            await asyncio.sleep(0.01)
            await rt.session.close()
            status, _, body = await poll
            assert status == 410 and json.loads(body)["errorType"] == "ExecutionEnvironmentShutdown"

    run(scenario)


def test_two_concurrent_invocations() -> None:
    async def scenario() -> None:
        async with serving(concurrency=2) as rt:
            polls = [asyncio.create_task(rt.next()) for _ in range(2)]
            await rt.session.wait_ready(1)
            await asyncio.sleep(0.01)
            # A third poll is over the concurrency.
            status, _, body = await rt.next()
            assert status == 429 and json.loads(body)["errorType"] == "TooManyPollers"
            calls = {rid: asyncio.create_task(rt.session.invoke(json.dumps(rid).encode(), rid, 1000))
                     for rid in ("one", "two")}
            got = [await p for p in polls]
            ids = sorted(h["Lambda-Runtime-Aws-Request-Id"] for _, h, _ in got)
            assert ids == ["one", "two"]
            assert rt.session.in_flight == 2
            for _, headers, body in reversed(got):  # answered in either order
                rid = headers["Lambda-Runtime-Aws-Request-Id"]
                assert json.loads(body) == rid
                assert (await rt.respond(rid, f'"{rid} done"'.encode()))[0] == 202
            for rid, call in calls.items():
                assert await call == (wire.OK, f'"{rid} done"'.encode())

    run(scenario)


def test_a_dropped_long_poll_does_not_swallow_an_event() -> None:
    async def scenario() -> None:
        async with serving() as rt:
            _, writer = await asyncio.open_connection("127.0.0.1", rt.port)
            writer.write(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await rt.session.wait_ready(1)
            writer.close()  # the runtime's connection drops while it waits
            await writer.wait_closed()
            await asyncio.sleep(0.05)
            call = asyncio.create_task(rt.session.invoke(b"{}", "kept", 1000))
            status, headers, _ = await rt.next()
            assert status == 200 and headers["Lambda-Runtime-Aws-Request-Id"] == "kept"
            await rt.respond("kept", b"1")
            assert await call == (wire.OK, b"1")

    run(scenario)


def test_unknown_paths_are_json_404() -> None:
    async def scenario() -> None:
        async with serving() as rt:
            async with rt.http.get(f"http://127.0.0.1:{rt.port}/2020-01-01/extension/register") as resp:
                assert resp.status == 404
                assert (await resp.json())["errorType"] == "NotFound"
            async with rt.http.get(f"{rt.base}/invocation/x/response") as resp:
                assert resp.status == 405
                assert (await resp.json())["errorType"] == "MethodNotAllowed"

    run(scenario)


def test_connections_are_capped() -> None:
    async def scenario() -> None:
        async with serving(max_connections=2) as rt:
            conns = [await asyncio.open_connection("127.0.0.1", rt.port) for _ in range(2)]
            await until(lambda: rt.session._runner is not None
                        and rt.session._runner.server is not None
                        and len(rt.session._runner.server.connections) == 2)
            reader, writer = await asyncio.open_connection("127.0.0.1", rt.port)
            async with asyncio.timeout(1):
                try:
                    extra = await reader.read(1)
                except ConnectionResetError:
                    extra = b""
            assert extra == b""  # refused: closed at once
            writer.close()
            for _, w in conns:
                w.close()

    run(scenario)
