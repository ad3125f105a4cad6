"""Bearer-token authentication for users (hashed tokens in the store) and for node agents (each
with its own credential from its join, hashed in the store too)."""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass

from control_plane.core import Clock, Unauthorized
from control_plane.store import Store, hash_token

CACHE_TTL_S = 10.0


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling."""

    name: str
    is_admin: bool


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """The joined node calling, and the URL it joined with."""

    node_id: str
    url: str


class Authenticator:
    """Checks `Authorization: Bearer ...` headers; caches token lookups for a few seconds so the
    invocation path does not query the database on every call."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._cache: dict[bytes, tuple[Principal | None, float]] = {}
        self._nodes: dict[bytes, tuple[NodeIdentity | None, float]] = {}

    async def user(self, header: bytes | None) -> Principal:
        """The principal behind a user's header, or Unauthorized."""
        if not header:
            raise Unauthorized("missing Authorization: Bearer <token> header")
        now = self.clock.now()
        hit = self._cache.get(header)
        if hit is not None and hit[1] > now:
            principal = hit[0]
        else:
            scheme, _, token = header.decode("latin-1").partition(" ")
            principal = None
            if scheme.lower() == "bearer" and token:
                row = await asyncio.to_thread(self.store.token_by_hash, hash_token(token.strip()))
                if row is not None:
                    principal = Principal(row.name, row.is_admin)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[header] = (principal, now + CACHE_TTL_S)
        if principal is None:
            raise Unauthorized("invalid token")
        return principal

    async def node(self, header: bytes | None) -> NodeIdentity:
        """The node behind an agent's `Bearer <node id>:<node secret>` header, or Unauthorized."""
        if not header:
            raise Unauthorized("missing Authorization: Bearer <node id>:<node secret> header")
        now = self.clock.now()
        hit = self._nodes.get(header)
        if hit is not None and hit[1] > now:
            found = hit[0]
        else:
            scheme, _, value = header.decode("latin-1").partition(" ")
            node_id, _, secret = value.strip().rpartition(":")
            found = None
            if scheme.lower() == "bearer" and node_id and secret:
                row = await asyncio.to_thread(self.store.node_credential, node_id)
                if row is not None and hmac.compare_digest(row.secret_hash, hash_token(secret)):
                    found = NodeIdentity(node_id, row.url)
            if len(self._nodes) > 10_000:
                self._nodes.clear()
            self._nodes[header] = (found, now + CACHE_TTL_S)
        if found is None:
            raise Unauthorized("unknown node credential (a node joins with its join token first)")
        return found

    def forget_node(self, node_id: str) -> None:
        """A node is gone: its credential opens nothing from now on (not even from the cache)."""
        self._nodes = {h: v for h, v in self._nodes.items() if v[0] is None or v[0].node_id != node_id}
