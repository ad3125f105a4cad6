"""Which control plane leads: a lease row in the shared database, renewed by its holder.

Several control planes may share one database (HA on PostgreSQL). All of them serve the API and
invocations and manage the instances they start; exactly one, the holder of the `fleet` lease, runs
the fleet loop (provider listing, provisioning, draining, orphans) and keeps `min_instances` warm.

Guarantees:
- at most one holder at a time: taking the lease is one conditional UPDATE (`Store.acquire_lease`);
- a leader that stops renewing (killed, partitioned, stalled) is replaced after at most
  `ttl_s` plus one renewal interval; a clean shutdown hands over at once (`release`);
- each term has a new generation; the leader's provider intents are written under the fence
  (lease, holder, generation), so a deposed leader that has not noticed yet cannot write one.
- every `ttl_s / 3` each member says it is alive and publishes the calls it cannot place, so the
  leader scales the fleet for everyone's demand; members silent for `3 * ttl_s` are dead (the
  leader removes the instances they left on nodes).

Lease times are wall-clock (`time.time()` by default), compared across machines: keep clocks in
sync (NTP) to well under the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any, TypeVar

from control_plane.store import ControlPlaneMember, Fence, Store
from placement import PlacementRequest, Resources

log = logging.getLogger("cumulus.leadership")

LEASE = "fleet"

T = TypeVar("T")


class Leadership:
    """Keeps this control plane's membership and its claim on the leader lease."""

    def __init__(self, store: Store, member_id: str, url: str, *, ttl_s: float,
                 pending: Callable[[], Sequence[PlacementRequest]] = lambda: (),
                 on_elected: Callable[[], Awaitable[None]] | None = None,
                 on_deposed: Callable[[], None] | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.id = member_id
        self.url = url
        self.ttl_s = ttl_s
        self.pending = pending
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.wall = wall
        self.fence: Fence | None = None  # set while this control plane leads
        self.members: list[ControlPlaneMember] = []  # live ones, as of the last tick
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")

    @property
    def is_leader(self) -> bool:
        """Whether this control plane held the lease at its last renewal."""
        return self.fence is not None

    @property
    def interval_s(self) -> float:
        """How often the lease is renewed and membership refreshed."""
        return self.ttl_s / 3

    def live_ids(self) -> set[str]:
        """Ids of the control planes alive as of the last tick (this one included)."""
        return {m.id for m in self.members} | {self.id}

    def others_pending(self) -> list[PlacementRequest]:
        """Demand the other live control planes could not place."""
        out = []
        for member in self.members:
            if member.id == self.id:
                continue
            try:
                for item in member.pending:
                    out.append(PlacementRequest(function=item["function"],
                                                resources=Resources(**item["resources"]),
                                                count=int(item["count"])))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("event=bad_member_pending member=%s error=%r", member.id, exc)
        return out

    async def tick(self) -> None:
        """Publish membership, renew or take the lease, refresh the member list."""
        now = self.wall()
        pending = [{"function": r.function, "resources": asdict(r.resources), "count": r.count}
                   for r in self.pending()]
        await self._db(self.store.heartbeat_member, self.id, self.url, pending, now)
        generation = await self._db(self.store.acquire_lease, LEASE, self.id, self.ttl_s, now)
        self.members = await self._db(self.store.members, now - 3 * self.ttl_s)
        if generation is None:
            if self.fence is not None:
                self.deposed("another control plane holds the lease")
            return
        fence = (LEASE, self.id, generation)
        if self.fence != fence:
            log.info("event=leader_elected member=%s generation=%d", self.id, generation)
            self.fence = fence
            if self.on_elected is not None:
                try:
                    await self.on_elected()
                except BaseException:  # not leading until it succeeds: the next tick tries again
                    self.fence = None
                    raise

    def deposed(self, why: str) -> None:
        """Stop acting as leader at once (the lease was lost, or a fenced write was refused)."""
        if self.fence is None:
            return
        log.warning("event=leader_deposed member=%s generation=%d why=%s", self.id, self.fence[2], why)
        self.fence = None
        if self.on_deposed is not None:
            self.on_deposed()

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop`; a failing tick (database unreachable) steps down if the lease may
        have expired meanwhile, and is retried."""
        last_ok = self.wall()
        while not stop.is_set():
            try:
                await self.tick()
                last_ok = self.wall()
            except Exception as exc:
                log.warning("event=leadership_tick_failed error=%r", exc)
                if self.wall() - last_ok > self.ttl_s * 0.8:
                    self.deposed(f"could not renew the lease for {self.wall() - last_ok:.1f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    async def leave(self) -> None:
        """Clean shutdown: hand the lease over at once and leave the member list."""
        if self.fence is not None:
            self.deposed("shutting down")
            await self._db(self.store.release_lease, LEASE, self.id)
        await self._db(self.store.remove_member, self.id)

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """A store call on the lease's own thread: renewals never queue behind other work."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))
