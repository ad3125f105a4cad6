"""The invocation endpoint, `POST /v1/functions/{name}/invoke`, in one implementation.

`InvokeEndpoint.answer` authenticates the caller, bounds and reads the body, calls the gateway and
turns every failure into the typed error envelope. `InvokeFastPath` serves it as raw ASGI in front of
FastAPI (no routing, dependency injection or models on the hot path); FastAPI's own route for it
(kept for the OpenAPI docs, and for an app without the fast path) delegates to the same `answer`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from control_plane.core import MAX_PAYLOAD_BYTES, CumulusError, PayloadTooLarge
from control_plane.gateway.events import check_event
from control_plane.gateway.gateway import Gateway

log = logging.getLogger("cumulus.gateway")

PREFIX = "/v1/functions/"
SUFFIX = "/invoke"

Authenticate = Callable[[bytes | None], Awaitable[object]]
"""Checks an `Authorization` header value; raises `Unauthorized` (or another CumulusError)."""


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """Status, headers (lowercase bytes, as ASGI wants them) and body of an answer."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


async def read_body(receive: Receive, limit: int = MAX_PAYLOAD_BYTES) -> bytes:
    """The request body, refused with PayloadTooLarge as soon as it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the event is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class InvokeEndpoint:
    """One invocation over HTTP: authenticate, read, invoke, answer (errors included)."""

    def __init__(self, gateway: Gateway, authenticate: Authenticate) -> None:
        self.gateway = gateway
        self.authenticate = authenticate

    async def answer(self, name: str, headers: Iterable[tuple[bytes, bytes]], receive: Receive) -> HttpAnswer:
        """The answer to invoking `name` with the request these headers and body belong to."""
        status, out, body = 500, [(b"content-type", b"application/json")], b""
        try:
            auth = None
            length = 0
            for key, value in headers:
                if key == b"authorization":
                    auth = value
                elif key == b"content-length":
                    length = int(value)
            await self.authenticate(auth)
            if length > MAX_PAYLOAD_BYTES:
                raise PayloadTooLarge(f"the event is over the limit of {MAX_PAYLOAD_BYTES} bytes")
            event = await read_body(receive)
            await check_event(event)
            result = await self.gateway.invoke(name, event)
            status, body = result.status, result.body
            out = [(k.lower().encode(), v.encode()) for k, v in result.headers.items()]
        except CumulusError as err:
            status, body = err.status, json.dumps(err.body()).encode()
        except Exception as exc:  # the platform answers, whatever happened
            log.exception("event=invoke_failed function=%s", name)
            body = json.dumps({"error": {"type": "InternalError", "message": repr(exc)}}).encode()
        out.append((b"content-length", str(len(body)).encode()))
        return HttpAnswer(status, out, body)


def invoked_function(scope: Scope) -> str | None:
    """The function a request invokes, if it is `POST /v1/functions/{name}/invoke`."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    if path.startswith(PREFIX) and path.endswith(SUFFIX):
        name = path[len(PREFIX):-len(SUFFIX)]
        if name and "/" not in name:
            return name
    return None


class InvokeFastPath:
    """ASGI middleware answering invocations from `InvokeEndpoint`, everything else from `app`."""

    def __init__(self, app: ASGIApp, endpoint: InvokeEndpoint) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = invoked_function(scope)
        if name is None:
            await self.app(scope, receive, send)
            return
        answer = await self.endpoint.answer(name, scope["headers"], receive)
        await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
        await send({"type": "http.response.body", "body": answer.body})
