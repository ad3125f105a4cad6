"""Kept-alive connections from the agent to one instance's runtime shim, over its unix socket.

The shim speaks a fixed, small subset of HTTP/1.1 (defined in `shim/cumulus_wire.py`): every answer
has a Content-Length and no chunking. Speaking exactly that subset on raw asyncio streams costs a
fraction of a general HTTP client per call, and this hop is on every invocation.
"""

from __future__ import annotations

import asyncio

from node_agent.shim import cumulus_wire as wire

HEAD_LIMIT = 1024 * 1024  # an answer's head, and the stream's buffer
_REQUEST = (f"POST {wire.INVOKE_PATH} HTTP/1.1\r\nHost: fn\r\n{wire.REQUEST_ID_HEADER}: %s\r\n"
            f"{wire.DEADLINE_HEADER}: %d\r\nContent-Length: %d\r\n\r\n").encode()


class ShimConnectionError(ConnectionError):
    """The instance's socket refused, reset or closed mid-answer."""


class ShimAnswerTooLarge(Exception):
    """The instance announced an answer over `MAX_ANSWER_BYTES`: it was not read (the connection is
    dropped, so the shim stops sending)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the answer is {size} bytes; the limit is {wire.MAX_ANSWER_BYTES}")
        self.size = size


class ShimClient:
    """A pool of idle connections to one instance's socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def invoke(self, body: bytes, request_id: str, timeout_ms: int) -> tuple[dict[str, str], bytes]:
        """POST /invoke and return the answer's headers (lowercase names) and body."""
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            try:
                reader, writer = await asyncio.open_unix_connection(self.path, limit=HEAD_LIMIT)
            except OSError as exc:
                raise ShimConnectionError(f"connect {self.path}: {exc}") from exc
        try:
            writer.write(_REQUEST % (request_id.encode(), timeout_ms, len(body)) + body)
            head = await reader.readuntil(b"\r\n\r\n")
            headers: dict[str, str] = {}
            for line in head.decode("latin-1").split("\r\n")[1:]:
                if line:
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
            size = int(headers.get("content-length", "0"))
            if size > wire.MAX_ANSWER_BYTES:
                raise ShimAnswerTooLarge(size)
            payload = await reader.readexactly(size)
        except ShimAnswerTooLarge:
            writer.close()
            raise
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            writer.close()
            raise ShimConnectionError(f"instance socket {self.path}: {exc!r}") from exc
        except BaseException:  # cancelled (timeout): the connection is mid-request, drop it
            writer.close()
            raise
        self._idle.append((reader, writer))
        return headers, payload

    def close(self) -> None:
        """Close every idle connection."""
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()
