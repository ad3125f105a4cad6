"""Request bodies bounded while they stream in, and deploys authenticated before their body is read.

FastAPI reads a multipart body whole (spooling it to disk) before any dependency runs, so a limit
checked in a route comes too late. `BodyGuard` stands in front: it answers 401 to a deploy without a
valid token before reading a byte of it, 413 to a body whose Content-Length is over its route's
limit, and 413 as soon as a streamed body passes that limit (the app then sees a disconnect, and
whatever it answers is dropped).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.core import CumulusError, PayloadTooLarge
from control_plane.functions import MAX_ARCHIVE_BYTES, MAX_UPLOAD_BYTES
from control_plane.gateway import invoked_function

# The zip (or an image archive) and the config, in multipart; each part is checked on its own after.
MAX_DEPLOY_BODY = max(MAX_UPLOAD_BYTES, MAX_ARCHIVE_BYTES) + 1024 * 1024
MAX_API_BODY = 1024 * 1024  # every other route's JSON

Authenticate = Callable[[bytes | None], Awaitable[object]]


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope["headers"] if k == name), None)


async def _answer(send: Send, err: CumulusError) -> None:
    body = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyGuard:
    """ASGI middleware: body limits per route, and authentication of deploys before their body."""

    def __init__(self, app: ASGIApp, authenticate: Authenticate) -> None:
        self.app = app
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        bodiless = scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS")
        if bodiless or invoked_function(scope):  # an event is bounded by the invoke endpoint itself
            await self.app(scope, receive, send)
            return
        deploy = scope["method"] == "POST" and scope["path"].rstrip("/") == "/v1/functions"
        limit = MAX_DEPLOY_BODY if deploy else MAX_API_BODY
        try:
            if deploy:
                await self.authenticate(_header(scope, b"authorization"))
            length = _header(scope, b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
        except CumulusError as err:
            await _answer(send, err)
            return
        state: dict[str, Any] = {"read": 0, "refused": False}

        async def guarded_receive() -> Message:
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > limit:
                    state["refused"] = True
                    await _answer(send, PayloadTooLarge(f"the request body is over the limit of {limit} "
                                                        "bytes"))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not state["refused"]:
                await send(message)

        await self.app(scope, guarded_receive, guarded_send)
