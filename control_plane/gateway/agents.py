"""`AgentClient`: the gateway's calls to node agents (start, stop, invoke an instance).

`HttpAgentClient` speaks the agent's HTTP API over one pool of kept-alive aiohttp connections: one
request per call, the event and the answer as raw bytes (nothing parsed on the way).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from control_plane.gateway.pools import Instance
from node_agent import protocol as p

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
INVOKE_GRACE_S = 30.0  # beyond the function's own timeout, which the agent enforces


class AgentCallFailed(Exception):
    """The call failed in transit: the agent may or may not have acted on it."""


class AgentUnreachable(AgentCallFailed):
    """No connection to the agent was made: nothing was sent, so trying elsewhere is safe."""


@dataclass(frozen=True, slots=True)
class StartAnswer:
    """How the agent answered a start: ready, full (another control plane placed there first), or
    refused with a message."""

    status: int
    message: str = ""

    @property
    def ready(self) -> bool:
        """The instance accepts invocations."""
        return self.status == 200

    @property
    def full(self) -> bool:
        """The node has no room: not the function's fault."""
        return self.status == 409


class AgentClient(Protocol):
    """Calls to the node agent an instance lives on.

    Guarantees: `start` is idempotent by instance id (the agent returns the instance it already
    runs); `stop` of an instance the agent does not have is success; every failure in transit raises
    `AgentCallFailed` (`AgentUnreachable` when nothing was sent), never a client library's error.
    """

    async def open(self) -> None:
        """Open connections (before the first call)."""
        ...

    async def close(self) -> None:
        """Close connections."""
        ...

    async def start(self, inst: Instance, request: p.InstanceStart) -> StartAnswer:
        """Start `inst` and wait until it is ready or refused."""
        ...

    async def stop(self, inst: Instance) -> None:
        """Remove `inst`'s container (AgentCallFailed if the agent did not confirm)."""
        ...

    async def invoke(self, inst: Instance, body: bytes, *, request_id: str,
                     timeout_s: float, cold: bool = False) -> tuple[Mapping[str, str], bytes]:
        """One invocation: the agent's outcome headers and the body (logs then result); `cold`:
        the call waited for the instance to start (the agent charges it the start-up)."""
        ...


async def _bounded(resp: aiohttp.ClientResponse) -> bytes | None:
    """The answer's body, or None (unread) when it is longer than any agent's answer may be."""
    if resp.content_length is not None:
        return None if resp.content_length > p.MAX_ANSWER_BYTES else await resp.read()
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > p.MAX_ANSWER_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(inst: Instance, size: int | None) -> tuple[Mapping[str, str], bytes]:
    message = (f"node {inst.node_id} answered {size if size is not None else 'more than'} bytes; "
               f"the limit is {p.MAX_ANSWER_BYTES}")
    return ({p.OUTCOME_HEADER: p.RESPONSE_TOO_LARGE, p.LOG_BYTES_HEADER: "0"},
            json.dumps({"type": p.RESPONSE_TOO_LARGE, "message": message}).encode())


def _message(body: bytes) -> str:
    """The message of an agent's error answer (its JSON envelope's, else the text itself)."""
    try:
        data = json.loads(body)
        message = data["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:500]
    return str(message)


class HttpAgentClient:
    """`AgentClient` over the agents' HTTP API, presenting to each agent the key of its node."""

    def __init__(self, agent_key: Callable[[str], str]) -> None:
        self._agent_key = agent_key
        self._headers: dict[str, dict[str, str]] = {}  # node id -> its Authorization header
        self._session: aiohttp.ClientSession | None = None

    def _auth(self, inst: Instance, **more: str) -> dict[str, str]:
        auth = self._headers.get(inst.node_id)
        if auth is None:
            auth = self._headers[inst.node_id] = {"Authorization": f"Bearer {self._agent_key(inst.node_id)}"}
        return {**auth, **more} if more else auth

    async def open(self) -> None:
        """One kept-alive connection pool to every agent."""
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=300, ttl_dns_cache=None)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)

    async def close(self) -> None:
        """Close the pool."""
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session."""
        assert self._session is not None, "HttpAgentClient.open() first"
        return self._session

    async def start(self, inst: Instance, request: p.InstanceStart) -> StartAnswer:
        """PUT the instance; a 200 means ready."""
        try:
            async with self.session.put(f"{inst.node_url}/v1/instances/{inst.id}",
                                        data=request.model_dump_json(),
                                        headers=self._auth(inst, **{"Content-Type": "application/json"}),
                                        timeout=aiohttp.ClientTimeout(total=START_TIMEOUT_S)) as resp:
                body = await resp.read()
                return StartAnswer(200) if resp.status == 200 else StartAnswer(resp.status, _message(body))
        except aiohttp.ClientConnectorError as exc:
            raise AgentUnreachable(f"starting on node {inst.node_id}: {exc!r}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AgentCallFailed(f"starting on node {inst.node_id}: {exc!r}") from exc

    async def stop(self, inst: Instance) -> None:
        """DELETE the instance; a 5xx is a failure (the agent could not remove it)."""
        what = f"stopping {inst.id} on node {inst.node_id}"
        try:
            async with self.session.delete(f"{inst.node_url}/v1/instances/{inst.id}",
                                           headers=self._auth(inst),
                                           timeout=aiohttp.ClientTimeout(total=STOP_TIMEOUT_S)) as resp:
                await resp.read()
                if resp.status >= 500:
                    raise AgentCallFailed(f"{what}: HTTP {resp.status}")
        except aiohttp.ClientConnectorError as exc:
            raise AgentUnreachable(f"{what}: {exc!r}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AgentCallFailed(f"{what}: {exc!r}") from exc

    async def invoke(self, inst: Instance, body: bytes, *, request_id: str,
                     timeout_s: float, cold: bool = False) -> tuple[Mapping[str, str], bytes]:
        """POST the event to the agent's proxy route for the instance."""
        headers = self._auth(inst, **{p.REQUEST_ID_HEADER: request_id,
                                      p.TIMEOUT_HEADER: str(int(timeout_s * 1000))})
        if cold:
            headers[p.COLD_START_HEADER] = "1"
        timeout = aiohttp.ClientTimeout(total=timeout_s + INVOKE_GRACE_S)
        try:
            async with self.session.post(inst.invoke_url, data=body, headers=headers,
                                         timeout=timeout) as resp:
                payload = await _bounded(resp)
                if payload is None:  # the agent bounds answers: this one is not an agent's
                    return _too_large(inst, resp.content_length)
                return resp.headers, payload
        except aiohttp.ClientConnectorError as exc:
            raise AgentUnreachable(f"node {inst.node_id} did not answer: {exc!r}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AgentCallFailed(f"node {inst.node_id} did not answer: {exc!r}") from exc
