"""The invocation endpoint, `POST /v1/functions/{name}/invoke`, in one implementation.

`InvokeEndpoint.answer` authenticates the caller, bounds and reads the body, calls the gateway and
turns every failure into the typed error envelope. `InvokeFastPath` serves it as raw ASGI in front of
FastAPI (no routing, dependency injection or models on the hot path); FastAPI's own route for it
(kept for the OpenAPI docs, and for an app without the fast path) delegates to the same `answer`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from control_plane.core import MAX_PAYLOAD_BYTES, CumulusError, InvalidRequest, PayloadTooLarge
from control_plane.gateway.events import check_event, check_stored_event
from control_plane.gateway.gateway import Gateway
from control_plane.gateway.pools import InvokeResult
from control_plane.identity import FunctionRef, Governor, Principal

log = logging.getLogger("cumulus.gateway")

PREFIX = "/v1/functions/"
SUFFIX = "/invoke"

Admit = Callable[[bytes | None, str], Awaitable[tuple[Principal, FunctionRef]]]
"""The caller of an `Authorization` header value and the function a name in the URL means, once the
caller may invoke it; raises `Unauthorized`, `Forbidden` (or another CumulusError)."""

Enqueue = Callable[[FunctionRef, bytes, str | None], Awaitable[str]]
"""Accept an async call of the function with this event (durably), once per key if one is given;
its request id."""

INVOCATION_TYPES = (b"x-cumulus-invocation-type", b"x-amz-invocation-type")
MAX_ASYNC_EVENT_BYTES = 256 * 1024  # Lambda's limit for an async call's event
IDEMPOTENCY_KEY = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


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

    def __init__(self, gateway: Gateway, admit: Admit, governor: Governor | None = None,
                 enqueue: Enqueue | None = None) -> None:
        self.gateway = gateway
        self.admit = admit
        self.governor = governor  # the tenants' rate, concurrency and budget
        self.enqueue = enqueue  # async calls (`X-Cumulus-Invocation-Type: Event`), if this platform has them

    async def answer(self, name: str, headers: Iterable[tuple[bytes, bytes]], receive: Receive) -> HttpAnswer:
        """The answer to invoking `name` with the request these headers and body belong to."""
        status, out, body = 500, [(b"content-type", b"application/json")], b""
        try:
            auth = kind = idempotency = None
            length = 0
            for key, value in headers:
                if key == b"authorization":
                    auth = value
                elif key == b"content-length":
                    length = int(value)
                elif key in INVOCATION_TYPES:
                    kind = value
                elif key == b"idempotency-key":
                    idempotency = value
            _, fn = await self.admit(auth, name)
            if kind is not None and kind != b"RequestResponse":
                return await self._not_now(fn, kind, length, receive, idempotency)
            if length > MAX_PAYLOAD_BYTES:
                raise PayloadTooLarge(f"the event is over the limit of {MAX_PAYLOAD_BYTES} bytes")
            if self.governor is None:
                result = await self._invoke(fn.key, receive)
            else:  # the tenant's rate, concurrency and budget, before its event is even read
                self.governor.admit(fn.tenant)
                try:
                    result = await self._invoke(fn.key, receive)
                finally:
                    self.governor.leave(fn.tenant)
            status, body = result.status, result.body
            out = [(k.lower().encode(), v.encode()) for k, v in result.headers.items()]
        except CumulusError as err:
            status, body = err.status, json.dumps(err.body()).encode()
            out.extend((k.lower().encode(), v.encode()) for k, v in err.headers().items())
        except Exception as exc:  # the platform answers, whatever happened
            log.exception("event=invoke_failed function=%s", name)
            body = json.dumps({"error": {"type": "InternalError", "message": repr(exc)}}).encode()
        out.append((b"content-length", str(len(body)).encode()))
        return HttpAnswer(status, out, body)

    async def _not_now(self, fn: FunctionRef, kind: bytes, length: int, receive: Receive,
                       idempotency: bytes | None = None) -> HttpAnswer:
        """An async call (`Event`: 202 with its request id, once it is queued durably) or a dry run
        (`DryRun`: 204, the caller may invoke the function). An async call with an `Idempotency-Key`
        is accepted once per key and function (for the queue's dedupe window): sent again, say
        after a lost answer, it answers the same request id and queues nothing."""
        if kind not in (b"Event", b"DryRun"):
            raise InvalidRequest(f"unknown invocation type {kind.decode('latin-1')[:40]!r}: Event, "
                                 "RequestResponse or DryRun")
        key = None
        if idempotency is not None:
            if not IDEMPOTENCY_KEY.fullmatch(idempotency):
                raise InvalidRequest("Idempotency-Key: 1 to 128 letters, digits and ._:- characters")
            digest = hashlib.sha256(fn.key.encode() + b"\x00" + idempotency).hexdigest()[:32]
            key = f"ik-{digest}"
        await self.gateway.pool(fn.key)  # FunctionNotFound before anything is accepted
        if kind == b"DryRun":
            return HttpAnswer(204, [(b"content-length", b"0")], b"")
        if self.enqueue is None:
            raise InvalidRequest("this control plane takes no async calls")
        if length > MAX_ASYNC_EVENT_BYTES:
            raise PayloadTooLarge(f"an async call's event is over the limit of {MAX_ASYNC_EVENT_BYTES} bytes")
        if self.governor is not None:
            self.governor.check_budget(fn.tenant)
        event = await read_body(receive, MAX_ASYNC_EVENT_BYTES)
        await check_stored_event(event or b"null")
        rid = await self.enqueue(fn, event or b"null", key)
        body = json.dumps({"request_id": rid, "status": "queued"}).encode()
        return HttpAnswer(202, [(b"content-type", b"application/json"), (b"x-request-id", rid.encode()),
                                (b"content-length", str(len(body)).encode())], body)

    async def _invoke(self, key: str, receive: Receive) -> InvokeResult:
        event = await read_body(receive)
        await check_event(event)
        return await self.gateway.invoke(key, event)


def invoked_function(scope: Scope) -> str | None:
    """The function a request invokes, if it is `POST /v1/functions/{name}/invoke` (or
    `/v1/functions/{tenant}/{name}/invoke`)."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    if path.startswith(PREFIX) and path.endswith(SUFFIX):
        name = path[len(PREFIX):-len(SUFFIX)]
        if name and name.count("/") <= 1:
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
