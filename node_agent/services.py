"""The services the node offers an instance's code (`context.services`), on a unix socket in the
instance's own socket folder (`cumulus_wire.SERVICES_NAME`).

One socket per instance: whoever connects to it is that instance's code, so every request is made
as the instance's function (and so its tenant), without a credential the function could leak or
forge, and without network: a function with no egress reaches its services all the same. The agent
forwards each request to a control plane with the node's own credential and the instance's
identity; the control plane decides (mail: its relay, the tenant's rate) and the answer goes back
as it came, `{"error": {"type", "message"}}` on a refusal.

Bounded like every server whose client is not trusted: at most `max_connections` connections per
instance and `wire.MAX_SERVICE_REQUEST_BYTES` per request body.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from node_agent.protocol import FUNCTION_HEADER, INSTANCE_HEADER, MAIL_ROUTE
from node_agent.shim import cumulus_wire as wire
from node_agent.sites import BoundedSockSite

__all__ = ["Forward", "ServicesServer", "error_body"]

log = logging.getLogger("cumulus.agent.services")

MAX_CONNECTIONS = 8
FUNCTION_UID = 65534  # what function containers run as (nobody)

# (control plane route, body, headers) -> (status, body, headers): the agent's way to a control plane
Forward = Callable[[str, bytes, Mapping[str, str]], Awaitable[tuple[int, bytes, Mapping[str, str]]]]


def error_body(kind: str, message: str) -> bytes:
    """The platform's error envelope."""
    return json.dumps({"error": {"type": kind, "message": message}}).encode()


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.Response(status=status, body=error_body(kind, message), content_type="application/json")


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _error(404, "NotFound", f"no such service: {request.path}")
    except web.HTTPMethodNotAllowed:
        return _error(405, "MethodNotAllowed", f"{request.method} is not allowed on {request.path}")


class ServicesServer:
    """The services socket of one instance."""

    def __init__(self, *, instance_id: str, function: str, forward: Forward,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.instance_id = instance_id
        self.function = function
        self.forward = forward
        self.max_connections = max_connections
        self.path: Path | None = None
        self._runner: web.AppRunner | None = None

    async def start(self, folder: Path) -> None:
        """Listen on `folder`/SERVICES_NAME (a stale socket there, of an agent before this one, is
        replaced), open to the instance's user."""
        path = folder / wire.SERVICES_NAME
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            # Given to the function's user (nobody), who may then connect. lchown, not chmod: the
            # folder is the function's, which could swap the socket for a symlink to a file of the
            # host between bind and here; lchown would only change the link.
            os.lchown(path, FUNCTION_UID, FUNCTION_UID)
            sock.listen(self.max_connections)
        except OSError:
            sock.close()
            raise
        app = web.Application(middlewares=[_json_errors], client_max_size=wire.MAX_SERVICE_REQUEST_BYTES)
        app.router.add_post(wire.MAIL_PATH, self._mail)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = BoundedSockSite(runner, sock, max_connections=self.max_connections,
                               backlog=self.max_connections, what="services")
        try:
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner, self.path = runner, path

    async def close(self) -> None:
        """Stop serving (the socket goes with the instance's folder)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _mail(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > wire.MAX_SERVICE_REQUEST_BYTES:
            return _error(413, "PayloadTooLarge", f"a service request holds at most "
                                                  f"{wire.MAX_SERVICE_REQUEST_BYTES} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "PayloadTooLarge", f"a service request holds at most "
                                                  f"{wire.MAX_SERVICE_REQUEST_BYTES} bytes")
        return await self._forward(MAIL_ROUTE, body, request)

    async def _forward(self, route: str, body: bytes, request: web.Request) -> web.Response:
        headers: dict[str, Any] = {INSTANCE_HEADER: self.instance_id, FUNCTION_HEADER: self.function,
                                   "Content-Type": "application/json"}
        request_id = request.headers.get(wire.REQUEST_ID_HEADER)
        if request_id:
            headers[wire.REQUEST_ID_HEADER] = request_id[:128]
        status, answer, answer_headers = await self.forward(route, body, headers)
        out = {"Content-Type": "application/json"}
        if "Retry-After" in answer_headers:
            out["Retry-After"] = answer_headers["Retry-After"]
        return web.Response(status=status, body=answer, headers=out)
