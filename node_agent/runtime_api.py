"""The Lambda Runtime API, served by the node agent for one instance of an OCI image built for Lambda.

A function image built for AWS Lambda (awslambdaric, or any custom runtime in the "provided" style)
runs a process that talks to `AWS_LAMBDA_RUNTIME_API` over HTTP: it long-polls for the next event,
runs it and posts the result or the error back. `RuntimeApiSession` is the server side of that API
for one instance, on a listening socket the agent created inside the container's own network
namespace. Its other side is the agent's: `invoke()` queues an event and returns the outcome, with
the outcome names of the runtime shim (`node_agent.shim.cumulus_wire`), so such an instance is used
like one running the shim.

The routes and their answers follow Lambda's (version 2018-06-01), errors as Lambda's JSON
(`errorType`, `errorMessage`):
  GET  /2018-06-01/runtime/invocation/next      200 + the event (a long poll with no timeout);
                                                403 InvalidStateTransition after an init error;
                                                429 TooManyPollers past `concurrency` polls;
                                                410 once the session failed or closed
  POST .../invocation/{AwsRequestId}/response   202; 400 InvalidRequestID (unknown, not delivered,
                                                answered); 413 RequestEntityTooLarge
  POST .../invocation/{AwsRequestId}/error      202; 400 InvalidRequestID
  POST /2018-06-01/runtime/init/error           202; 403 InvalidStateTransition once the runtime
                                                asked for an event, or after a first init error
Anything else is a JSON 404 (405 for a known path with another method).

Every request body is read in chunks and only up to its bound; a runtime can hold at most
`concurrency` long polls and `max_connections` connections (the function is not trusted: each of its
connections is a file descriptor of the agent).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import secrets
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from node_agent.protocol import CRASHED
from node_agent.shim import cumulus_wire as wire
from node_agent.sites import BoundedSockSite

__all__ = [
    "API_VERSION",
    "CRASHED",
    "ERROR_TYPE_HEADER",
    "RuntimeApiClosed",
    "RuntimeApiError",
    "RuntimeApiInitError",
    "RuntimeApiSession",
]

log = logging.getLogger("cumulus.runtime_api")

API_VERSION = "2018-06-01"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
REQUEST_ID_HEADER = "Lambda-Runtime-Aws-Request-Id"
DEADLINE_HEADER = "Lambda-Runtime-Deadline-Ms"
FUNCTION_ARN_HEADER = "Lambda-Runtime-Invoked-Function-Arn"
TRACE_ID_HEADER = "Lambda-Runtime-Trace-Id"

_READ_CHUNK = 64 * 1024
_EXCERPT_BYTES = 256  # of a garbage error report, quoted in the message
_MAX_HEADER_TYPE = 256  # characters of Lambda-Runtime-Function-Error-Type kept
_RECENT_IDS = 4096  # finished request ids remembered, so a reused one is not confused with its late answer
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


class RuntimeApiError(Exception):
    """Base of this module's errors."""


class RuntimeApiInitError(RuntimeApiError):
    """The runtime reported that its initialisation failed (`POST /runtime/init/error`).

    `payload` is the JSON every invocation answers with (outcome `INIT_ERROR`), `error` the same
    decoded: `type`, `message`, `errorType`, `errorMessage`, `stackTrace`.
    """

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.error: dict[str, Any] = json.loads(payload)
        super().__init__(self.error.get("message", "the function's initialisation failed"))


class RuntimeApiClosed(RuntimeApiError):
    """The session ended (`close()`, or `fail()` when the container died) before the runtime was
    ready; `outcome` and `message` are what invocations answer with."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message


@dataclass(eq=False)
class _Invocation:
    """One event, from `invoke()` until its answer."""

    aws_id: str
    body: bytes
    deadline_ms: int
    trace_id: str
    future: asyncio.Future[tuple[str, bytes]]
    answering: bool = False  # a /response or /error for it is being read
    delivered: bool = False  # handed to the runtime (then only an answer ends it)


def _json_response(status: int, doc: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=json.dumps(doc).encode(), content_type="application/json")


def _lambda_error(status: int, error_type: str, message: str) -> web.Response:
    """An error answer shaped like Lambda's own (`errorMessage`, `errorType`)."""
    return _json_response(status, {"errorMessage": message, "errorType": error_type})


def _outcome_payload(outcome: str, message: str) -> bytes:
    return json.dumps({"type": outcome, "message": message}).encode()


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def _error_payload(outcome: str, body: bytes | None, header_type: str, limit: int) -> bytes:
    """The JSON an invocation answers with for a runtime's error report (`/error`, `/init/error`).

    `{"type": outcome, "message": "<errorType>: <errorMessage>", "errorType", "errorMessage",
    "stackTrace"}` from the runtime's JSON; the `Lambda-Runtime-Function-Error-Type` header gives the
    type when the body has none. A body that is not a JSON object (or was over `limit`, `None`) is
    reported as such, quoted in part.
    """
    header_type = header_type[:_MAX_HEADER_TYPE]
    error_type, error_message, stack = header_type, "", []
    if body is None:
        error_message = f"the runtime's error report is over {limit} bytes; it was not read"
    else:
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            doc = None
        if isinstance(doc, dict):
            error_type = _as_text(doc.get("errorType")) or header_type
            error_message = _as_text(doc.get("errorMessage"))
            trace = doc.get("stackTrace")
            if isinstance(trace, list):
                stack = [_as_text(line) for line in trace]
            elif trace is not None:
                stack = [_as_text(trace)]
        else:
            excerpt = body[:_EXCERPT_BYTES].decode("utf-8", "replace")
            more = "..." if len(body) > _EXCERPT_BYTES else ""
            error_message = (f"the runtime's error report is not a JSON object ({len(body)} bytes): "
                             f"{excerpt!r}{more}")
    if error_type and error_message:
        message = f"{error_type}: {error_message}"
    else:
        message = error_type or error_message or "the runtime reported an error with no type or message"
    return json.dumps({"type": outcome, "message": message, "errorType": error_type,
                       "errorMessage": error_message, "stackTrace": stack}).encode()


async def _read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The request's body, or `None` once it is over `limit` bytes (then the rest is not read)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    buf = bytearray()
    async for chunk in request.content.iter_chunked(_READ_CHUNK):
        if len(buf) + len(chunk) > limit:
            return None
        buf += chunk
    return bytes(buf)


class RuntimeApiSession:
    """The Lambda Runtime API of one instance: events in through `invoke()`, out to the runtime's
    long polls, answers back.

    `in_flight` counts invocations not answered yet (queued or running). Several long polls may
    wait at once (at most `concurrency`): each takes the next event.
    """

    def __init__(self, *, function: str, version: int, memory_mib: int, concurrency: int = 1,
                 max_response_bytes: int = wire.MAX_RESULT_BYTES, max_error_bytes: int = 1 << 20,
                 arn_prefix: str = "arn:cumulus:lambda:local:000000000000:function",
                 max_connections: int | None = None) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.function = function
        self.version = version
        self.memory_mib = memory_mib
        self.concurrency = concurrency
        self.max_response_bytes = max_response_bytes
        self.max_error_bytes = max_error_bytes
        self.function_arn = f"{arn_prefix}:{function}"
        # The runtime needs a connection per poll and per answer at once; the rest is headroom.
        # Each is a file descriptor of the agent: at most 64, whatever the concurrency.
        default = min(2 * concurrency + 4, 64)
        self.max_connections = max_connections if max_connections is not None else default
        self._live: dict[str, _Invocation] = {}  # queued or delivered, by the id the runtime sees
        self._queue: collections.deque[_Invocation] = collections.deque()
        self._pollers: collections.deque[asyncio.Future[_Invocation | None]] = collections.deque()
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._ready = False
        self._init_error: bytes | None = None
        self._failure: tuple[str, bytes] | None = None  # (outcome, payload) once failed or closed
        self._settled = asyncio.Event()  # ready, init error, failed or closed
        self._runner: web.AppRunner | None = None
        self._closed = False

    # -- the agent's side ------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once the runtime asked for an event (its initialisation is done)."""
        return self._ready

    @property
    def in_flight(self) -> int:
        """Invocations queued or running, not answered yet."""
        return len(self._live)

    @property
    def init_error(self) -> bytes | None:
        """The init error's payload (as invocations answer it), if the runtime reported one."""
        return self._init_error

    async def start(self, sock: socket.socket) -> None:
        """Serve the API on `sock`, a bound and listening TCP socket (the session owns it from now
        on: `close()` closes it)."""
        if self._runner is not None or self._closed:
            raise RuntimeApiError("the session was started already, or closed")
        limit = max(self.max_response_bytes, self.max_error_bytes) + _READ_CHUNK
        app = web.Application(middlewares=[_json_errors], client_max_size=limit)
        base = f"/{API_VERSION}/runtime"
        app.router.add_get(f"{base}/invocation/next", self._next)
        app.router.add_post(f"{base}/invocation/{{request_id}}/response", self._response)
        app.router.add_post(f"{base}/invocation/{{request_id}}/error", self._error)
        app.router.add_post(f"{base}/init/error", self._post_init_error)
        # handler_cancellation: a long poll whose connection drops is cancelled, not left to take
        # an event it cannot deliver.
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        site = BoundedSockSite(runner, sock, max_connections=self.max_connections,
                               backlog=min(128, self.max_connections), what="runtime_api")
        try:
            await site.start()
        except BaseException:
            self._runner = None
            await runner.cleanup()
            raise
        log.info("event=runtime_api_started function=%s version=%s address=%s", self.function,
                 self.version, site.name)

    async def close(self) -> None:
        """Stop serving: waiting and running invocations answer `CRASHED`, long polls end (410)."""
        if self._closed:
            return
        self._closed = True
        if self._failure is None:
            self._fail(CRASHED, "the instance's runtime API was closed")
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def fail(self, outcome: str, message: str) -> None:
        """The container died: every waiting or running invocation, and every later one, answers
        `(outcome, {"type", "message"})` (an init error the runtime reported stays the answer)."""
        if self._failure is None:
            self._fail(outcome, message)

    async def wait_ready(self, timeout_s: float) -> None:
        """Return once the runtime asked for an event.

        Raises `RuntimeApiInitError` if it reported an init error first, `RuntimeApiClosed` if the
        session failed or closed first, `TimeoutError` after `timeout_s`.
        """
        async with asyncio.timeout(timeout_s):
            await self._settled.wait()
        if self._ready:
            return
        if self._init_error is not None:
            raise RuntimeApiInitError(self._init_error)
        assert self._failure is not None
        outcome, payload = self._failure
        raise RuntimeApiClosed(outcome, json.loads(payload)["message"])

    async def invoke(self, body: bytes, request_id: str, timeout_ms: int) -> tuple[str, bytes]:
        """Queue one event and return `(outcome, payload)` once the runtime answered it.

        `request_id` is what the runtime sees as the request's id when it is a plain token not in
        use (nor used recently) here; otherwise a fresh UUID is. The deadline the runtime sees is
        now + `timeout_ms`; the caller enforces it (cancelling this call drops the invocation: a
        late answer to it gets 400).
        """
        if self._init_error is not None:
            return wire.INIT_ERROR, self._init_error
        if self._failure is not None:
            return self._failure
        aws_id = request_id if (_SAFE_ID.fullmatch(request_id) and request_id not in self._live
                                and request_id not in self._recent) else str(uuid.uuid4())
        now = time.time()
        inv = _Invocation(aws_id=aws_id, body=body, deadline_ms=int(now * 1000) + timeout_ms,
                          trace_id=f"Root=1-{int(now):08x}-{secrets.token_hex(12)};"
                                   f"Parent={secrets.token_hex(8)};Sampled=0",
                          future=asyncio.get_running_loop().create_future())
        self._live[aws_id] = inv
        self._queue.append(inv)
        self._dispatch()
        try:
            return await inv.future
        finally:
            self._drop(inv)

    # -- bookkeeping -----------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Hand queued events to waiting long polls, oldest first."""
        while self._queue and self._pollers:
            poller = self._pollers.popleft()
            if poller.done():
                continue
            poller.set_result(self._queue.popleft())

    def _drop(self, inv: _Invocation) -> None:
        """Forget an invocation (answered, failed or cancelled by its caller)."""
        if not inv.future.done():
            inv.future.cancel()
        if self._live.get(inv.aws_id) is inv:
            del self._live[inv.aws_id]
            self._recent[inv.aws_id] = None
            if len(self._recent) > _RECENT_IDS:
                self._recent.popitem(last=False)
        if not inv.delivered:
            with contextlib.suppress(ValueError):  # not queued: handed to a long poll already
                self._queue.remove(inv)

    def _finish(self, inv: _Invocation, outcome: str, payload: bytes) -> None:
        if not inv.future.done():
            inv.future.set_result((outcome, payload))
        self._drop(inv)

    def _fail(self, outcome: str, message: str) -> None:
        self._failure = (outcome, _outcome_payload(outcome, message))
        self._answer_all(*self._failure)
        log.info("event=runtime_api_failed function=%s outcome=%s message=%s", self.function, outcome,
                 message)

    def _answer_all(self, outcome: str, payload: bytes) -> None:
        """Answer every invocation and end every long poll."""
        for inv in list(self._live.values()):
            self._finish(inv, outcome, payload)
        self._queue.clear()
        while self._pollers:
            poller = self._pollers.popleft()
            if not poller.done():
                poller.set_result(None)
        self._settled.set()

    def _claim(self, aws_id: str) -> _Invocation | None:
        """The delivered invocation an answer is for, reserved for that answer; None if there is
        none (unknown, not delivered, answered, or being answered)."""
        inv = self._live.get(aws_id)
        if inv is None or not inv.delivered or inv.answering or inv.future.done():
            return None
        inv.answering = True
        return inv

    def _requeue(self, inv: _Invocation) -> None:
        """An event that could not be delivered goes back to the head of the queue."""
        if self._live.get(inv.aws_id) is inv and not inv.future.done() and self._failure is None:
            inv.delivered = False
            self._queue.appendleft(inv)
            self._dispatch()

    # -- the runtime's side ----------------------------------------------------------------
    def _gone(self) -> web.Response:
        return _lambda_error(410, "ExecutionEnvironmentShutdown",
                             "the execution environment is shutting down")

    async def _next(self, request: web.Request) -> web.StreamResponse:
        if self._init_error is not None:
            return _lambda_error(403, "InvalidStateTransition",
                                 "State transition from InitError to Ready failed for runtime: "
                                 "the runtime reported an init error")
        if self._failure is not None:
            return self._gone()
        if not self._ready:
            self._ready = True
            self._settled.set()
            log.info("event=runtime_api_ready function=%s version=%s", self.function, self.version)
        while True:
            if self._failure is not None or self._init_error is not None:
                return self._gone()  # while this poll waited (it took an event dropped since)
            if self._queue:
                inv: _Invocation | None = self._queue.popleft()
            else:
                if len(self._pollers) >= self.concurrency:
                    return _lambda_error(429, "TooManyPollers",
                                         f"{len(self._pollers)} requests for the next invocation are "
                                         f"waiting already; the concurrency is {self.concurrency}")
                poller: asyncio.Future[_Invocation | None] = asyncio.get_running_loop().create_future()
                self._pollers.append(poller)
                try:
                    inv = await poller
                except asyncio.CancelledError:  # the runtime's connection dropped
                    if poller in self._pollers:
                        self._pollers.remove(poller)
                    if poller.done() and not poller.cancelled() and poller.result() is not None:
                        handed = poller.result()
                        assert handed is not None
                        self._requeue(handed)
                    raise
            if inv is None:
                return self._gone()
            if not inv.future.done():
                break  # else its caller gave up while it was queued: take the next one
        inv.delivered = True
        resp = web.StreamResponse(status=200, headers={
            REQUEST_ID_HEADER: inv.aws_id,
            DEADLINE_HEADER: str(inv.deadline_ms),
            FUNCTION_ARN_HEADER: self.function_arn,
            TRACE_ID_HEADER: inv.trace_id,
            "Content-Type": "application/json",
        })
        resp.content_length = len(inv.body)
        try:
            await resp.prepare(request)
            await resp.write(inv.body)
            await resp.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self._requeue(inv)
            raise
        return resp

    async def _response(self, request: web.Request) -> web.StreamResponse:
        inv = self._claim(request.match_info["request_id"])
        if inv is None:
            return _lambda_error(400, "InvalidRequestID", "Invalid request ID")
        try:
            body = await _read_bounded(request, self.max_response_bytes)
        finally:
            inv.answering = False
        if inv.future.done():  # its caller gave up while the answer came in
            return _lambda_error(400, "InvalidRequestID", "Invalid request ID")
        if body is None:
            self._finish(inv, wire.RESPONSE_TOO_LARGE, _outcome_payload(
                wire.RESPONSE_TOO_LARGE,
                f"the function's response is over {self.max_response_bytes} bytes, the limit"))
            return _lambda_error(413, "RequestEntityTooLarge",
                                 f"Exceeded maximum allowed payload size ({self.max_response_bytes} bytes).")
        self._finish(inv, wire.OK, body)
        return _json_response(202, {"status": "OK"})

    async def _error(self, request: web.Request) -> web.StreamResponse:
        inv = self._claim(request.match_info["request_id"])
        if inv is None:
            return _lambda_error(400, "InvalidRequestID", "Invalid request ID")
        try:
            body = await _read_bounded(request, self.max_error_bytes)
        finally:
            inv.answering = False
        if inv.future.done():
            return _lambda_error(400, "InvalidRequestID", "Invalid request ID")
        header_type = request.headers.get(ERROR_TYPE_HEADER, "")
        self._finish(inv, wire.HANDLER_ERROR,
                     _error_payload(wire.HANDLER_ERROR, body, header_type, self.max_error_bytes))
        if body is None:
            return _lambda_error(413, "RequestEntityTooLarge",
                                 f"Exceeded maximum allowed payload size ({self.max_error_bytes} bytes).")
        return _json_response(202, {"status": "OK"})

    async def _post_init_error(self, request: web.Request) -> web.StreamResponse:
        # As on Lambda: only while initialising (before the first /next), and only once.
        if self._ready or self._init_error is not None:
            state = "InitError" if self._init_error is not None else "Ready"
            return _lambda_error(403, "InvalidStateTransition",
                                 f"State transition from {state} to InitError failed for runtime. "
                                 "Error: State transition is not allowed")
        if self._failure is not None:
            return self._gone()
        body = await _read_bounded(request, self.max_error_bytes)
        if self._ready or self._init_error is not None or self._failure is not None:
            return _lambda_error(403, "InvalidStateTransition", "State transition is not allowed")
        header_type = request.headers.get(ERROR_TYPE_HEADER, "")
        payload = _error_payload(wire.INIT_ERROR, body, header_type, self.max_error_bytes)
        self._init_error = payload
        log.info("event=runtime_api_init_error function=%s version=%s error=%s", self.function,
                 self.version, json.loads(payload)["message"][:500])
        self._answer_all(wire.INIT_ERROR, payload)
        return _json_response(202, {"status": "OK"})


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Routing errors (no such path, another method) as JSON, like the API's other errors."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _lambda_error(404, "NotFound", f"no such path: {request.path}")
    except web.HTTPMethodNotAllowed as exc:
        return _lambda_error(405, "MethodNotAllowed",
                             f"{request.method} is not allowed on {request.path}; "
                             f"allowed: {', '.join(sorted(exc.allowed_methods))}")
