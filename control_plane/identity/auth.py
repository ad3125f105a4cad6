"""Bearer-token authentication for users (hashed tokens in the store) and for node agents (each
with its own credential from its join, hashed in the store too).

What a token opens is cached, so that the invocation path does not query the database on every
call, and the cache is never trusted longer than it is known to be current: every control plane
polls the store's identity generation (which every change of users, tokens and grants bumps) every
`POLL_S`, drops its caches when it moved, and uses a cached answer only while its last poll is
younger than `FRESH_S`. A revoked token is thus refused on every control plane within a second, on
the fast path too; an expired one at once (its expiry is checked on every call).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import LRUCache, TTLCache

from control_plane.core import Clock, Unauthorized
from control_plane.identity.access import (
    Action,
    FunctionRef,
    Grant,
    Permission,
    Principal,
    Role,
    authorize,
)
from control_plane.identity.quotas import Governor
from control_plane.store import Store, TokenHolder, hash_token

log = logging.getLogger("cumulus.identity")

POLL_S = 0.25  # how often each control plane reads the identity generation
FRESH_S = 0.75  # how long after its last read a cached answer is still used
NODE_CACHE_TTL_S = 10.0  # node credentials: a removed node is forgotten explicitly (forget_node)
MAX_CACHED = 16_384


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """The joined node calling, and the URL it joined with."""

    node_id: str
    url: str


def principal_of(holder: TokenHolder) -> Principal:
    """What a token (with its user and the user's grants) may do."""
    token, user = holder.token, holder.user
    grants = frozenset(Grant.parse(g.permission, f"{g.tenant}/{g.pattern}", user.tenant)
                       for g in holder.grants)
    scopes = None if token.scopes is None else frozenset(Grant.parse_scope(s, user.tenant)
                                                         for s in token.scopes)
    return Principal(user=user.name, tenant=user.tenant, role=Role(user.role), token_id=token.public_id,
                     grants=grants, scopes=scopes, expires_at=token.expires_at)


class Authenticator:
    """Checks `Authorization: Bearer ...` headers of users and of node agents."""

    def __init__(self, store: Store, clock: Clock, *, wall: Callable[[], float] = time.time,
                 governor: Governor | None = None) -> None:
        self.store = store
        self.clock = clock
        self.governor = governor  # the tenants' runtime quotas, reloaded with the generation
        self.wall = wall  # token expiry is wall-clock time
        self._users: LRUCache[bytes, Principal | None] = LRUCache(MAX_CACHED)
        self._nodes: TTLCache[bytes, NodeIdentity | None] = TTLCache(MAX_CACHED, NODE_CACHE_TTL_S,
                                                                     timer=clock.now)
        self._generation = -1
        self._confirmed_at = float("-inf")

    # -- keeping the cache current -----------------------------------------------------------------
    async def refresh(self) -> None:
        """Read the identity generation; drop the cached principals and reload the tenants' quotas
        if it moved."""
        started = self.clock.now()
        generation = await asyncio.to_thread(self.store.identity_generation)
        if generation != self._generation:
            if self.governor is not None:
                self.governor.load(await asyncio.to_thread(self.store.tenants))
            self._users.clear()
            self._generation = generation
        self._confirmed_at = started

    async def watch(self, stop: asyncio.Event) -> None:
        """Refresh every `POLL_S` until `stop` (a failed read only leaves the cache stale: unused)."""
        while not stop.is_set():
            try:
                await self.refresh()
            except Exception as exc:  # the database is away: cached answers age out, unused
                log.warning("event=identity_poll_failed error=%r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)

    def changed(self) -> None:
        """This control plane changed accounts: forget cached principals now (the others do on
        their next poll)."""
        self._users.clear()
        self._confirmed_at = float("-inf")
        self._generation = -1  # the next poll reloads the quotas too

    # -- users ---------------------------------------------------------------------------------------
    async def user(self, header: bytes | None) -> Principal:
        """The principal behind a user's header, or Unauthorized."""
        if not header:
            raise Unauthorized("missing Authorization: Bearer <token> header")
        fresh = self.clock.now() - self._confirmed_at < FRESH_S
        if fresh and header in self._users:
            principal = self._users[header]
        else:
            principal = await self._lookup(header)
            self._users[header] = principal
        if principal is None:
            raise Unauthorized("invalid token")
        if principal.expires_at is not None and principal.expires_at <= self.wall():
            raise Unauthorized("this token has expired")
        return principal

    async def _lookup(self, header: bytes) -> Principal | None:
        scheme, _, token = header.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        digest = hash_token(token)
        holder = await asyncio.to_thread(self.store.token_holder, digest)
        if holder is None or not hmac.compare_digest(holder.token.token_hash, digest):
            return None
        if holder.token.revoked_at is not None:
            return None
        return principal_of(holder)

    async def authorized(self, header: bytes | None, action: Action,
                         ref: str) -> tuple[Principal, FunctionRef]:
        """The caller and the function `ref` names (bare: in the caller's tenant), once the caller
        is known (401) and may do `action` on it (403)."""
        principal = await self.user(header)
        fn = FunctionRef.parse(ref, principal.tenant)
        authorize(principal, action, fn)
        return principal, fn

    async def invoker(self, header: bytes | None, ref: str) -> tuple[Principal, FunctionRef]:
        """`authorized` for invoking: what the invocation path calls."""
        return await self.authorized(header, Permission.INVOKE, ref)

    # -- node agents -----------------------------------------------------------------------------------
    async def node(self, header: bytes | None) -> NodeIdentity:
        """The node behind an agent's `Bearer <node id>:<node secret>` header, or Unauthorized."""
        if not header:
            raise Unauthorized("missing Authorization: Bearer <node id>:<node secret> header")
        if header in self._nodes:
            found = self._nodes[header]
        else:
            scheme, _, value = header.decode("latin-1").partition(" ")
            node_id, _, secret = value.strip().rpartition(":")
            found = None
            if scheme.lower() == "bearer" and node_id and secret:
                row = await asyncio.to_thread(self.store.node_credential, node_id)
                if row is not None and hmac.compare_digest(row.secret_hash, hash_token(secret)):
                    found = NodeIdentity(node_id, row.url)
            self._nodes[header] = found
        if found is None:
            raise Unauthorized("unknown node credential (a node joins with its join token first)")
        return found

    def forget_node(self, node_id: str) -> None:
        """A node is gone: its credential opens nothing from now on (not even from the cache)."""
        for header, found in list(self._nodes.items()):
            if found is not None and found.node_id == node_id:
                self._nodes.pop(header, None)
