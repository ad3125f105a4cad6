"""The runtime shim: runs inside every function container and serves its handler over a unix socket.

Standard library only (the runtime image holds nothing but Debian's python3), and only light
modules on the start path (threads and sockets, no asyncio), so a cold start costs a Python start
plus the user's own imports. One thread per kept-alive connection from the agent; at most
`CUMULUS_CONCURRENCY` handlers run at once.

The protocol (HTTP/1.1 with keep-alive, on the socket in the bind-mounted directory) is defined in
`cumulus_wire.py`, beside this file, which the node agent imports too. A handler module that fails to
import makes every invoke answer `INIT_ERROR`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import socket
import sys
import threading
import time
from typing import Any

if __package__:  # imported as node_agent.shim.cumulus_runtime (on a host, e.g. by tests)
    from node_agent.shim import cumulus_wire as wire
else:  # run as a script in a function container: the protocol module sits beside it
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import cumulus_wire as wire  # type: ignore[no-redef]

    del sys.path[0]  # the shim's folder is not the function's to import from

TRUNCATED = "\n[cumulus: output over {} bytes dropped]\n"


class _CapturingStream(io.TextIOBase):
    """Sends writes to the calling thread's invocation buffer (at most `MAX_LOG_BYTES` of UTF-8,
    the rest dropped), or to the real stream outside an invocation."""

    def __init__(self, real: Any, local: threading.local) -> None:
        self._real = real
        self._local = local

    def write(self, text: str) -> int:
        buf: bytearray | None = getattr(self._local, "buf", None)
        if buf is None:
            return int(self._real.write(text))
        room = wire.MAX_LOG_BYTES - len(buf)
        if room > 0:
            data = text[:room].encode("utf-8", "replace")  # a character is at least one byte
            if len(data) > room:
                data = data[:room].decode("utf-8", "ignore").encode()
                self._local.truncated = True
            elif len(text) > room:
                self._local.truncated = True
            buf += data
        elif text:
            self._local.truncated = True
        return len(text)

    def write_whole(self, text: str) -> None:
        """Write `text` only if all of it fits in the invocation's buffer (a structured entry is
        kept whole or dropped, never cut)."""
        buf: bytearray | None = getattr(self._local, "buf", None)
        if buf is None:
            self._real.write(text)
            return
        data = text.encode("utf-8", "replace")
        if len(buf) + len(data) > wire.MAX_LOG_BYTES:
            self._local.truncated = True
            return
        buf += data

    def flush(self) -> None:
        self._real.flush()

    def writable(self) -> bool:
        return True


class ServiceError(Exception):
    """A service of the platform refused or failed a request: `type` names why (as the API's
    errors do: `MailNotConfigured`, `QuotaExceeded`, `InvalidMail`, `MailRelayError`,
    `ServiceUnavailable`...), `status` is its HTTP status and `retry_after_s` says when trying
    again may succeed (a rate limit), else None."""

    def __init__(self, type: str, message: str, status: int, retry_after_s: float | None = None) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s


class Mail:
    """`context.services.mail`: mail through the cluster's SMTP relay, sent by the node agent as
    this function's tenant (the function needs no network and holds no credential)."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def send(self, to: str | list[str], subject: str, body: str, *, cc: str | list[str] | None = None,
             bcc: str | list[str] | None = None, reply_to: str | None = None,
             html: str | None = None) -> str:
        """Send one message and return its Message-ID once the relay took it; `ServiceError` if it
        was refused (invalid, over the tenant's rate, mail not configured) or not sent."""
        doc: dict[str, Any] = {"to": to, "subject": subject, "body": body}
        for key, value in (("cc", cc), ("bcc", bcc), ("reply_to", reply_to), ("html", html)):
            if value is not None:
                doc[key] = value
        answer = self._services.call(wire.MAIL_PATH, doc)
        return str(answer.get("message_id", ""))


class Services:
    """`context.services`: what the platform offers a function, reached through the node agent
    (a unix socket in the instance's own folder), never over the network."""

    Error = ServiceError

    def __init__(self, request_id: str, deadline: float) -> None:
        self._request_id = request_id
        self._deadline = deadline
        self.mail = Mail(self)

    def log(self, level: str, message: str, **fields: Any) -> None:
        """Write one structured entry (a JSON line: time, level, message, request id, fields) to
        this call's logs. `level` is one of DEBUG, INFO, WARNING (WARN), ERROR, CRITICAL; a field
        that is not JSON is written as its repr. An entry that does not fit in what is left of the
        call's log bound is dropped whole (and the logs say output was dropped)."""
        name = str(level).upper()
        name = "WARNING" if name == "WARN" else name
        if name not in wire.LOG_LEVELS:
            raise ValueError(f"unknown log level {level!r}: use one of {', '.join(wire.LOG_LEVELS)}")
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        entry: dict[str, Any] = {"time": stamp, "level": name, "message": str(message),
                                 "request_id": self._request_id}
        if fields:
            entry["fields"] = fields
        line = json.dumps(entry, default=repr, ensure_ascii=False, separators=(",", ":")) + "\n"
        stream = sys.stdout
        if isinstance(stream, _CapturingStream):
            stream.write_whole(line)
        else:
            stream.write(line)

    def call(self, path: str, doc: dict[str, Any]) -> dict[str, Any]:
        """POST `doc` to the agent's services; its JSON answer, or `ServiceError`."""
        body = json.dumps(doc).encode()
        if len(body) > wire.MAX_SERVICE_REQUEST_BYTES:
            raise ServiceError("PayloadTooLarge", f"the request is {len(body)} bytes of JSON; the limit is "
                                                  f"{wire.MAX_SERVICE_REQUEST_BYTES}", 413)
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise ServiceError("Timeout", "the invocation has no time left", 504)
        where = os.environ.get("CUMULUS_SERVICES_SOCKET", f"{wire.SOCKET_DIR}/{wire.SERVICES_NAME}")
        conn = _unix_connection(where, timeout=min(60.0, left))
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json",
                                             wire.REQUEST_ID_HEADER: self._request_id})
            answer = conn.getresponse()
            data = answer.read(wire.MAX_SERVICE_REQUEST_BYTES)
            status, retry_after = answer.status, answer.getheader("Retry-After")
        except OSError as exc:
            raise ServiceError("ServiceUnavailable", f"the node's services did not answer: {exc}",
                               503) from None
        finally:
            conn.close()
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = {}
        if 200 <= status < 300 and isinstance(parsed, dict):
            return parsed
        error = parsed.get("error") if isinstance(parsed, dict) else None
        error = error if isinstance(error, dict) else {}
        raise ServiceError(str(error.get("type", "ServiceError")),
                           str(error.get("message", f"the service answered {status}")), status,
                           float(retry_after) if retry_after and retry_after.isdigit() else None)


def _unix_connection(path: str, timeout: float) -> Any:
    """An http.client connection over the unix socket `path` (http.client is imported only when a
    function calls a service: it stays off the cold-start path)."""
    import http.client

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                raise
            self.sock = sock

    return Connection("localhost", timeout=timeout)


class Context:
    """What the handler gets as `context`, shaped like AWS Lambda's, with the platform's
    `services` (`log`, `mail`)."""

    def __init__(self, request_id: str, deadline: float) -> None:
        self.function_name = os.environ.get("CUMULUS_FUNCTION_NAME", "")
        self.function_version = os.environ.get("CUMULUS_FUNCTION_VERSION", "")
        self.memory_limit_in_mb = int(os.environ.get("CUMULUS_MEMORY_MB", "0") or 0)
        self.request_id = request_id
        self.aws_request_id = request_id
        self._deadline = deadline
        self.services = Services(request_id, deadline)

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
            self.init_error = _error(wire.INIT_ERROR, exc)

    def invoke(self, body: bytes, request_id: str, deadline: float) -> tuple[str, bytes, bytes, int]:
        """Run one invocation: (outcome, logs, payload, duration in µs)."""
        if self.init_error is not None:
            return wire.INIT_ERROR, b"", json.dumps(self.init_error).encode(), 0
        try:
            event = json.loads(body) if body else None
        except (ValueError, RecursionError) as exc:  # too deep: the gateway refuses such events first
            err = {"type": wire.INVALID_EVENT, "message": f"the event is not valid JSON: {exc}"}
            return wire.INVALID_EVENT, b"", json.dumps(err).encode(), 0
        buf = bytearray()
        self.local.buf, self.local.truncated = buf, False
        start = time.perf_counter_ns()
        try:
            result = self.handler(event, Context(request_id, deadline))
            outcome = wire.OK
        except BaseException as exc:  # the handler's failure is reported, never fatal to the shim
            outcome, payload = wire.HANDLER_ERROR, _error(wire.HANDLER_ERROR, exc)
        finally:
            duration = (time.perf_counter_ns() - start) // 1000
            self.local.buf = None
        if outcome == wire.OK:
            try:
                data = json.dumps(result, separators=(",", ":")).encode()
            except (TypeError, ValueError, RecursionError) as exc:
                outcome = wire.NOT_SERIALIZABLE
                payload = {"type": outcome,
                           "message": f"the handler's result is not JSON-serializable: {exc}"}
            else:
                if len(data) > wire.MAX_RESULT_BYTES:
                    outcome = wire.RESPONSE_TOO_LARGE
                    payload = {"type": outcome, "message": f"the result is {len(data)} bytes of JSON; the "
                                                           f"limit is {wire.MAX_RESULT_BYTES}"}
                    del data
        if outcome != wire.OK:
            data = json.dumps(payload).encode()
        logs = bytes(buf)
        if self.local.truncated:
            logs += TRUNCATED.format(wire.MAX_LOG_BYTES).encode()
        return outcome, logs, data, duration


def _error(kind: str, exc: BaseException) -> dict[str, Any]:
    import traceback  # only on failures: keeps it off the cold-start path

    lines = traceback.format_exception(exc)
    return {"type": kind, "message": f"{type(exc).__name__}: {exc}", "traceback": lines}


class Connection:
    """One kept-alive connection from the node agent, served on its own thread."""

    def __init__(self, runtime: Runtime, conn: socket.socket, slots: threading.BoundedSemaphore) -> None:
        self.runtime = runtime
        self.conn = conn
        self.slots = slots

    def serve(self) -> None:
        """Answer requests until the agent closes the connection."""
        rfile = self.conn.makefile("rb", buffering=65536)
        try:
            while True:
                request_line = rfile.readline(65536)
                if not request_line:
                    return
                method, path, _ = request_line.decode("latin-1").split(" ", 2)
                headers = {}
                while True:
                    line = rfile.readline(65536)
                    if line in (b"\r\n", b"\n", b""):
                        break
                    key, _, value = line.decode("latin-1").partition(":")
                    headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = rfile.read(length) if length else b""
                if path == wire.INVOKE_PATH and method == "POST":
                    self.conn.sendall(self._invoke(body, headers))
                else:
                    self.conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (OSError, ValueError):
            return
        finally:
            rfile.close()
            self.conn.close()

    def _invoke(self, body: bytes, headers: dict[str, str]) -> bytes:
        request_id = headers.get(wire.REQUEST_ID_HEADER.lower(), "")
        deadline = time.monotonic() + int(headers.get(wire.DEADLINE_HEADER.lower(), "900000")) / 1000
        with self.slots:
            outcome, logs, data, duration = self.runtime.invoke(body, request_id, deadline)
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"{wire.OUTCOME_HEADER}: {outcome}\r\n{wire.LOG_BYTES_HEADER}: {len(logs)}\r\n"
                f"{wire.DURATION_HEADER}: {duration}\r\n"
                f"Content-Length: {len(logs) + len(data)}\r\n\r\n")
        return head.encode("latin-1") + logs + data


def serve(path: str, concurrency: int) -> None:
    """Import the handler, then serve on `path` until the container is stopped."""
    runtime = Runtime()
    slots = threading.BoundedSemaphore(concurrency)
    tmp = f"{path}.tmp"
    for stale in (path, tmp):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(tmp)
    server.listen(128)
    # Bind under a temporary name and rename: the socket appears only once it accepts.
    os.rename(tmp, path)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=Connection(runtime, conn, slots).serve, daemon=True).start()


def wait_for_gate(path: str, wait_s: float = wire.GATE_WAIT_S) -> None:
    """Block until the node writes the gate file (a networked container's rules are in place)."""
    deadline = time.monotonic() + wait_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.stderr.write(f"cumulus: the node did not set up this container's network in {wait_s:g} s\n")
            sys.exit(3)
        time.sleep(0.001)


def main() -> None:
    """Entry point of the container."""
    gate = os.environ.get("CUMULUS_GATE")
    if gate:
        wait_for_gate(gate)
    sys.path.insert(0, "/var/task/.cumulus/deps")  # artifacts built before dependency layers
    sys.path.insert(0, "/opt/cumulus-deps")
    sys.path.insert(0, "/var/task")
    concurrency = max(1, int(os.environ.get("CUMULUS_CONCURRENCY", "1")))
    serve(os.environ.get("CUMULUS_SOCKET", f"{wire.SOCKET_DIR}/{wire.SOCKET_NAME}"), concurrency)


if __name__ == "__main__":
    main()
