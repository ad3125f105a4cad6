"""The runtime shim: runs inside every function container and serves its handler over a unix socket.

Standard library only (the runtime image holds nothing but Debian's python3) and no third-party
import on the start path, so a cold start costs a Python start plus the user's own imports.

Protocol (HTTP/1.1 with keep-alive, on the socket in the bind-mounted directory):
  POST /invoke   body = the event as JSON; headers X-Request-Id, X-Deadline-Ms (ms left)
  GET  /healthz  200 once the handler module is imported (or failed to import: then every invoke
                 answers FunctionInitError)
The answer to /invoke is always 200; the outcome is in headers and the body holds the captured
stdout/stderr followed by the result (or error) JSON:
  X-Cumulus-Outcome: ok | HandlerError | ResultNotSerializable | InvalidEvent | FunctionInitError
  X-Cumulus-Log-Bytes: how many leading body bytes are logs
  X-Cumulus-Duration-Us: how long the handler ran
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import json
import os
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

MAX_LOG_BYTES = 256 * 1024


class _CapturingStream(io.TextIOBase):
    """Sends writes to the calling thread's invocation buffer, or to the real stream outside one."""

    def __init__(self, real: Any, local: threading.local) -> None:
        self._real = real
        self._local = local

    def write(self, text: str) -> int:
        buf = getattr(self._local, "buf", None)
        if buf is None:
            return int(self._real.write(text))
        if buf.tell() < MAX_LOG_BYTES:
            buf.write(text)
        return len(text)

    def flush(self) -> None:
        self._real.flush()

    def writable(self) -> bool:
        return True


class Context:
    """What the handler gets as `context`, shaped like AWS Lambda's."""

    def __init__(self, request_id: str, deadline: float) -> None:
        self.function_name = os.environ.get("CUMULUS_FUNCTION_NAME", "")
        self.function_version = os.environ.get("CUMULUS_FUNCTION_VERSION", "")
        self.memory_limit_in_mb = int(os.environ.get("CUMULUS_MEMORY_MB", "0") or 0)
        self.request_id = request_id
        self.aws_request_id = request_id
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the platform stops this invocation."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class Runtime:
    """Imports the handler once and runs invocations, capturing their output."""

    def __init__(self) -> None:
        self.local = threading.local()
        sys.stdout = _CapturingStream(sys.stdout, self.local)
        sys.stderr = _CapturingStream(sys.stderr, self.local)
        self.handler: Any = None
        self.init_error: dict[str, Any] | None = None
        spec = os.environ.get("CUMULUS_HANDLER", "main.handler")
        module_name, _, func_name = spec.rpartition(".")
        try:
            module = importlib.import_module(module_name)
            self.handler = getattr(module, func_name)
            if not callable(self.handler):
                raise TypeError(f"{spec} is not callable")
        except BaseException as exc:  # any failure at import is the function's, reported per call
            self.init_error = _error("FunctionInitError", exc)

    def invoke(self, body: bytes, request_id: str, deadline: float) -> tuple[str, bytes, bytes, int]:
        """Run one invocation: (outcome, logs, payload, duration in µs)."""
        if self.init_error is not None:
            return "FunctionInitError", b"", json.dumps(self.init_error).encode(), 0
        try:
            event = json.loads(body) if body else None
        except ValueError as exc:
            err = {"type": "InvalidEvent", "message": f"the event is not valid JSON: {exc}"}
            return "InvalidEvent", b"", json.dumps(err).encode(), 0
        buf = io.StringIO()
        self.local.buf = buf
        start = time.perf_counter_ns()
        try:
            result = self.handler(event, Context(request_id, deadline))
            outcome = "ok"
        except BaseException as exc:  # the handler's failure is reported, never fatal to the shim
            outcome, payload = "HandlerError", _error("HandlerError", exc)
        finally:
            duration = (time.perf_counter_ns() - start) // 1000
            self.local.buf = None
        if outcome == "ok":
            try:
                data = json.dumps(result, separators=(",", ":")).encode()
            except (TypeError, ValueError) as exc:
                outcome = "ResultNotSerializable"
                payload = {"type": outcome,
                           "message": f"the handler's result is not JSON-serializable: {exc}"}
        if outcome != "ok":
            data = json.dumps(payload).encode()
        return outcome, buf.getvalue().encode("utf-8", "replace"), data, duration


def _error(kind: str, exc: BaseException) -> dict[str, Any]:
    lines = traceback.format_exception(exc)
    return {"type": kind, "message": f"{type(exc).__name__}: {exc}", "traceback": lines}


class Server:
    """A minimal HTTP/1.1 keep-alive server on a unix socket."""

    def __init__(self, runtime: Runtime, concurrency: int) -> None:
        self.runtime = runtime
        self.concurrency = concurrency
        self.pool = ThreadPoolExecutor(max_workers=concurrency) if concurrency > 1 else None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        key, _, value = line.partition(":")
                        headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                if path == "/invoke" and method == "POST":
                    await self._invoke(body, headers, writer)
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        finally:
            writer.close()

    async def _invoke(self, body: bytes, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        request_id = headers.get("x-request-id", "")
        deadline = time.monotonic() + int(headers.get("x-deadline-ms", "900000")) / 1000
        if self.pool is None:
            # One call at a time: run it on the loop thread and save a thread hop per call.
            outcome, logs, data, duration = self.runtime.invoke(body, request_id, deadline)
        else:
            loop = asyncio.get_running_loop()
            outcome, logs, data, duration = await loop.run_in_executor(
                self.pool, self.runtime.invoke, body, request_id, deadline)
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"X-Cumulus-Outcome: {outcome}\r\nX-Cumulus-Log-Bytes: {len(logs)}\r\n"
                f"X-Cumulus-Duration-Us: {duration}\r\n"
                f"Content-Length: {len(logs) + len(data)}\r\n\r\n")
        writer.write(head.encode("latin-1") + logs + data)


async def serve(path: str, concurrency: int) -> None:
    """Import the handler, then listen on `path` until the container is stopped."""
    runtime = Runtime()
    server = Server(runtime, concurrency)
    tmp = f"{path}.tmp"
    for stale in (path, tmp):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    srv = await asyncio.start_unix_server(server.handle, path=tmp, limit=8 * 1024 * 1024)
    # Bind under a temporary name and rename: the socket appears only once it accepts.
    os.rename(tmp, path)
    async with srv:
        await srv.serve_forever()


def main() -> None:
    """Entry point of the container."""
    sys.path.insert(0, "/var/task/.cumulus/deps")
    sys.path.insert(0, "/var/task")
    concurrency = max(1, int(os.environ.get("CUMULUS_CONCURRENCY", "1")))
    asyncio.run(serve(os.environ.get("CUMULUS_SOCKET", "/run/fn/fn.sock"), concurrency))


if __name__ == "__main__":
    main()
