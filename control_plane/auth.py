"""Bearer-token authentication for users (hashed tokens in the store) and node agents."""

from __future__ import annotations

import asyncio
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from control_plane.clock import Clock
from control_plane.errors import Unauthorized
from control_plane.store import Store, hash_token

CACHE_TTL_S = 10.0


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling."""

    name: str
    is_admin: bool


def write_secret(path: Path, value: str) -> None:
    """Write a secret file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    path.chmod(0o600)


def cluster_node_token(store: Store, legacy_path: Path) -> str:
    """The secret node agents and control planes share, one per cluster: kept in the database so
    every control plane on it accepts every agent (a token from an older data directory's
    `node.token` file is adopted, so running agents keep working)."""

    def make() -> str:
        if legacy_path.exists():
            return legacy_path.read_text().strip()
        return "cmln_" + secrets.token_urlsafe(32)

    return store.shared_secret("node_token", make)


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
