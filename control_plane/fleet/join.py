"""New nodes joining: each provision request gets a single-use, expiring join token in its
bootstrap, which the node's agent redeems once for its node id and the cluster's node secret."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from control_plane.core import NotFound, new_id
from control_plane.fleet.agent_package import AgentPackage
from control_plane.fleet.nodes import Fleet
from control_plane.identity import NodeKeys, new_node_secret
from control_plane.store import Store, hash_token
from node_agent.protocol import JoinRequest, JoinResult
from provisioners.base import NodeBootstrap

log = logging.getLogger("cumulus.fleet")

AGENT_PACKAGE_ROUTE = "/v1/agent/package"


class Joins:
    """Issues join tokens with bootstraps, and redeems them."""

    def __init__(self, store: Store, fleet: Fleet, *, url: str, keys: NodeKeys, runtime_image: str,
                 agent_package: AgentPackage, token_ttl_s: float, provider: str) -> None:
        self.store = store
        self.fleet = fleet
        self.url = url
        self.keys = keys
        self.runtime_image = runtime_image
        self.agent_package = agent_package
        self.token_ttl_s = token_ttl_s
        self.provider = provider

    def bootstrap_for(self, request_id: str) -> NodeBootstrap:
        """The bootstrap of a provision request: a fresh join token and where to get the agent
        (providers call this from their own threads)."""
        token = self.store.issue_join_token(request_id, self.provider, "", ttl_s=self.token_ttl_s)
        wheel = self.agent_package.wheel()
        return NodeBootstrap(control_plane_url=self.url, join_token=token,
                             agent_package=f"{self.url}{AGENT_PACKAGE_ROUTE}/{wheel.name}",
                             runtime_image=self.runtime_image)

    async def join(self, req: JoinRequest) -> JoinResult:
        """Redeem a join token (Unauthorized if unknown, used or expired): the node's id is the
        provider's id for its machine when it knows it."""
        node_id = req.provider_node_id or new_id("node", 10)
        secret = new_node_secret()
        row = await asyncio.to_thread(lambda: self.store.redeem_join_token(
            req.join_token, node_id, secret_hash=hash_token(secret), url=req.url))
        self.fleet.joined[node_id] = row.request_id
        log.info("event=node_joined node=%s request=%s url=%s", node_id, row.request_id, req.url)
        return JoinResult(node_id=node_id, node_secret=secret, agent_key=self.keys.agent_key(node_id))

    def package(self, filename: str) -> Path:
        """The agent wheel, if `filename` names it (NotFound otherwise)."""
        wheel = self.agent_package.wheel()
        if filename != wheel.name:
            raise NotFound(f"no package {filename}; this control plane serves {wheel.name}")
        return wheel
