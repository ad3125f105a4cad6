"""Schedules: stored, listed, and moved on to their next firing by compare-and-set."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlmodel import col, select

from control_plane.store.tables import Schedule
from control_plane.store.unit import Repository


class ScheduleRepository(Repository):
    """Schedules of every tenant."""

    def add_schedule(self, row: dict[str, Any]) -> Schedule | None:
        """Store a new schedule; None if its key is taken."""
        with self.session() as s:
            if s.get(Schedule, row["key"]) is not None:
                return None
            schedule = Schedule(**row)
            s.add(schedule)
            s.flush()
            s.expunge(schedule)
            return schedule

    def schedule(self, key: str) -> Schedule | None:
        with self.session() as s:
            return s.get(Schedule, key)

    def schedules(self, tenant: str | None = None) -> list[Schedule]:
        """By key."""
        with self.session() as s:
            q = select(Schedule)
            if tenant is not None:
                q = q.where(col(Schedule.tenant) == tenant)
            return list(s.exec(q.order_by(col(Schedule.key))).all())

    def delete_schedule(self, key: str) -> bool:
        with self.session() as s:
            schedule = s.get(Schedule, key)
            if schedule is None:
                return False
            s.delete(schedule)
            return True

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
