"""Joining a cluster: redeem the single-use join token, once, for a node id, this node's own secret
(its credential towards control planes) and the key control planes will call it with.

The identity is saved in the agent's data directory (mode 0600), so an agent that restarts keeps
its node id and does not need its (already used) join token again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from node_agent.protocol import JoinRequest, JoinResult
from node_agent.settings import AgentSettings

log = logging.getLogger("cumulus.agent")


class JoinError(Exception):
    """The control plane refused the join token, or never answered within the deadline."""


@dataclass(frozen=True)
class Identity:
    """Who this node is: its id, what it presents to control planes, what it expects of them."""

    node_id: str
    credential: str  # `<node id>:<node secret>`, sent as `Authorization: Bearer ...`
    agent_key: str  # what callers of this agent present


def _save(path: Path, joined: JoinResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(joined.model_dump(), fh)


def _identity(joined: JoinResult) -> Identity:
    return Identity(joined.node_id, f"{joined.node_id}:{joined.node_secret}", joined.agent_key)


async def identity(settings: AgentSettings, *, deadline_s: float = 900.0) -> Identity:
    """This node's identity: given by the settings (a node that does not join), saved by an earlier
    join, or from joining now."""
    if settings.node_id:
        token = settings.resolved_token()
        return Identity(settings.node_id, f"{settings.node_id}:{token}", token)
    saved = settings.data_dir / "identity.json"
    if saved.exists():
        try:
            return _identity(JoinResult.model_validate_json(saved.read_text()))
        except ValueError:  # an identity of an older Cumulus (one shared token): join again
            if not settings.join_token:
                raise JoinError(f"{saved} is not an identity this agent knows; "
                                "give it a join token") from None
    if not settings.join_token:
        raise JoinError("the agent needs node_id and token, or a join_token")
    url = settings.control_plane_url.rstrip("/") + "/v1/internal/join"
    body = JoinRequest(join_token=settings.join_token, url=settings.url(),
                       provider_node_id=settings.provider_node_id).model_dump()
    stop = time.monotonic() + deadline_s
    delay = 0.5
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        while True:
            try:
                async with http.post(url, json=body) as resp:
                    if resp.status == 200:
                        joined = JoinResult.model_validate_json(await resp.read())
                        _save(saved, joined)
                        log.info("event=joined node=%s", joined.node_id)
                        return _identity(joined)
                    if resp.status in (401, 403, 422):
                        raise JoinError(f"join refused (HTTP {resp.status}): {await resp.text()}")
                    problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                problem = repr(exc)
            if time.monotonic() + delay > stop:
                raise JoinError(f"could not join {url} within {deadline_s:.0f}s: {problem}")
            log.warning("event=join_retry error=%s", problem)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
