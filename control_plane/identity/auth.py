"""Bearer-token authentication for users (hashed tokens in the store) and node agents."""

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


class Authenticator:
    """Checks `Authorization: Bearer ...` headers; caches token lookups for a few seconds so the
    invocation path does not query the database on every call."""

    def __init__(self, store: Store, clock: Clock, node_token: str) -> None:
        self.store = store
        self.clock = clock
        self._node = f"Bearer {node_token}".encode()
        self._cache: dict[bytes, tuple[Principal | None, float]] = {}

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

    def node(self, header: bytes | None) -> None:
        """Check a node agent's header, or Unauthorized."""
        if not header or not hmac.compare_digest(header, self._node):
            raise Unauthorized("missing or wrong node token")
