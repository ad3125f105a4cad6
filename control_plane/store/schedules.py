"""Schedules: stored, listed, and moved on to their next firing by compare-and-set."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlmodel import col, select

from control_plane.store.keyed import add_keyed, delete_keyed, get_keyed, list_keyed
from control_plane.store.tables import Schedule
from control_plane.store.unit import Repository


class ScheduleRepository(Repository):
    """Schedules of every tenant."""

    def add_schedule(self, row: dict[str, Any]) -> Schedule | None:
        """Store a new schedule; None if its key is taken."""
        return add_keyed(self.session, Schedule, row)

    def schedule(self, key: str) -> Schedule | None:
        return get_keyed(self.session, Schedule, key)

    def schedules(self, tenant: str | None = None) -> list[Schedule]:
        """By key."""
        return list_keyed(self.session, Schedule, tenant)

    def delete_schedule(self, key: str) -> bool:
        return delete_keyed(self.session, Schedule, key)

    def due_schedules(self, now: float, limit: int = 500) -> list[Schedule]:
        """Schedules whose next firing is at or before `now`, earliest first."""
        with self.session() as s:
            return list(s.exec(select(Schedule).where(col(Schedule.next_fire_at) <= now)
                               .order_by(col(Schedule.next_fire_at)).limit(limit)).all())

    def advance_schedule(self, key: str, *, was: float, next_fire_at: float, fired_at: float | None) -> bool:
        """Move the schedule from its next firing `was` on to `next_fire_at` (having fired at
        `fired_at`, if it did); False if another control plane moved it first."""
        values: dict[str, Any] = {"next_fire_at": next_fire_at}
        if fired_at is not None:
            values.update(last_fired_at=fired_at, fired=col(Schedule.fired) + 1)
        with self.session() as s:
            result = s.execute(update(Schedule).where(col(Schedule.key) == key,
                                                      col(Schedule.next_fire_at) == was).values(**values))
            return bool(result.rowcount)  # type: ignore[attr-defined]
