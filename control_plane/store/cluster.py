"""What several control planes on one database share: their membership, the leader lease that
fences the leader's writes, and cluster secrets."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from control_plane.store.tables import ClusterSecret, ControlPlaneMember, LeaderLease
from control_plane.store.unit import Repository

Fence = tuple[str, str, int]
"""(lease name, holder, generation): what a leader's writes are fenced by."""


class LeaseLost(Exception):
    """The leader lease a write was fenced by is no longer held: the writer must stop acting."""


def check_fence(session: Session, fence: Fence, now: float) -> None:
    """Inside a unit of work: fail with LeaseLost unless the fence's lease is still held."""
    name, holder, generation = fence
    row = session.exec(select(LeaderLease).where(LeaderLease.name == name).with_for_update()).first()
    if row is None or row.holder != holder or row.generation != generation or row.expires_at < now:
        raise LeaseLost(f"lease {name!r} generation {generation} of {holder!r} is no longer held")


class ClusterRepository(Repository):
    """Membership, the leader lease and shared secrets."""

    # -- control plane members, shared secrets ---------------------------------------------------
    def heartbeat_member(self, member_id: str, url: str, pending: list[dict[str, Any]], now: float) -> None:
        """Say that control plane `member_id` is alive at `url` and what demand it cannot place."""
        with self.session() as s:
            row = s.get(ControlPlaneMember, member_id)
            if row is None:
                row = ControlPlaneMember(id=member_id, url=url, started_at=now)
            row.url, row.last_seen, row.pending = url, now, pending
            s.add(row)

    def members(self, seen_after: float) -> list[ControlPlaneMember]:
        """Control planes seen alive after `seen_after`, by id."""
        with self.session() as s:
            return list(s.exec(select(ControlPlaneMember)
                               .where(ControlPlaneMember.last_seen > seen_after)
                               .order_by(col(ControlPlaneMember.id))).all())

    def remove_member(self, member_id: str) -> None:
        """A control plane leaves (clean shutdown)."""
        with self.session() as s:
            row = s.get(ControlPlaneMember, member_id)
            if row is not None:
                s.delete(row)

    def shared_secret(self, name: str, make: Callable[[], str]) -> str:
        """The cluster's secret `name`, created with `make()` by the first control plane to ask."""
        with self.session() as s:
            row = s.get(ClusterSecret, name)
            if row is not None:
                return row.value
        try:
            with self.session() as s:
                s.add(ClusterSecret(name=name, value=make()))
        except IntegrityError:
            pass  # another control plane created it first: theirs is the one
        with self.session() as s:
            return s.exec(select(ClusterSecret.value).where(ClusterSecret.name == name)).one()

    # -- leader lease --------------------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl_s: float, now: float) -> int | None:
        """Take or renew the lease `name` for `holder` until `now + ttl_s`: the lease generation
        if `holder` has it now, None if someone else holds an unexpired lease. One conditional
        UPDATE, so two contenders can never both win (SQLite and PostgreSQL alike)."""
        try:
            with self.session() as s:
                if s.get(LeaderLease, name) is None:
                    s.add(LeaderLease(name=name))
        except IntegrityError:
            pass  # another contender created the row first
        with self.session() as s:
            s.execute(text(
                "UPDATE leaderlease SET generation = CASE WHEN holder = :me THEN generation "
                "ELSE generation + 1 END, holder = :me, expires_at = :until "
                "WHERE name = :name AND (holder = :me OR expires_at < :now)"),
                {"me": holder, "until": now + ttl_s, "name": name, "now": now})
            row = s.exec(select(LeaderLease).where(LeaderLease.name == name)).one()
            return row.generation if row.holder == holder and row.expires_at >= now else None

    def lease(self, name: str) -> LeaderLease | None:
        """The lease `name` if it is held now."""
        with self.session() as s:
            row = s.get(LeaderLease, name)
            return row if row is not None and row.expires_at >= time.time() else None

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up at once (a clean shutdown), if `holder` has it."""
        with self.session() as s:
            s.execute(text("UPDATE leaderlease SET expires_at = 0 WHERE name = :name AND holder = :me"),
                      {"name": name, "me": holder})
