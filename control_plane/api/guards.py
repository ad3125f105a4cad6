"""Request bodies bounded while they stream in, and their senders authenticated before they are read.

FastAPI reads a body whole (a multipart one spooled to disk, a JSON one decoded) before any
dependency runs, so a limit or a credential checked in a route comes too late: a stranger could
make it parse a megabyte, or learn from a 422 that a route exists. `BodyGuard` stands in front: it
answers 401 to a request with a body and no valid credential (a user's token; a node's own on
`/v1/internal/*`, but for the join, whose credential is its body) before reading a byte of it, 413
to a body whose Content-Length is over its route's limit, and 413 as soon as a streamed body passes
that limit (the app then sees a disconnect, and whatever it answers is dropped).
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
INTERNAL = "/v1/internal/"
OPEN_WITH_BODY = frozenset({"/v1/internal/join"})  # its credential is the join token in its body


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope["headers"] if k == name), None)


async def _answer(send: Send, err: CumulusError) -> None:
    body = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyGuard:
    """ASGI middleware: body limits per route, and authentication before any body is read."""

    def __init__(self, app: ASGIApp, authenticate: Authenticate, authenticate_node: Authenticate) -> None:
        self.app = app
        self.authenticate = authenticate  # a user's token
        self.authenticate_node = authenticate_node  # a node's credential

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        bodiless = scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS")
        if bodiless or invoked_function(scope):  # an event is bounded by the invoke endpoint itself
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        deploy = scope["method"] == "POST" and path.rstrip("/") == "/v1/functions"
        limit = MAX_DEPLOY_BODY if deploy else MAX_API_BODY
        try:
            if path not in OPEN_WITH_BODY:
                auth = self.authenticate_node if path.startswith(INTERNAL) else self.authenticate
                await auth(_header(scope, b"authorization"))
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
