"""Joining a cluster: redeem the single-use join token for a node id and the node secret, once.

The identity is saved in the agent's data directory (mode 0600), so an agent that restarts keeps
its node id and does not need its (already used) join token again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

import aiohttp

from node_agent.protocol import JoinRequest, JoinResult
from node_agent.settings import AgentSettings

log = logging.getLogger("cumulus.agent")


class JoinError(Exception):
    """The control plane refused the join token, or never answered within the deadline."""


def _save(path: Path, node_id: str, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"node_id": node_id, "token": token}, fh)


async def identity(settings: AgentSettings, *, deadline_s: float = 900.0) -> tuple[str, str]:
    """(node id, node secret): from the settings, the saved identity, or by joining."""
    if settings.node_id:
        return settings.node_id, settings.resolved_token()
    saved = settings.data_dir / "identity.json"
    if saved.exists():
        data = json.loads(saved.read_text())
        return str(data["node_id"]), str(data["token"])
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
                        _save(saved, joined.node_id, joined.node_token)
                        log.info("event=joined node=%s", joined.node_id)
                        return joined.node_id, joined.node_token
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
