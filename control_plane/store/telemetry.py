"""Fleet events and invocation records, written in batches (never on a caller's path)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlmodel import col, delete, func, select

from control_plane.store.tables import FleetEvent, InvocationLog
from control_plane.store.unit import Repository


class TelemetryRepository(Repository):
    """Append and read back events and invocation logs."""

    def add_events(self, events: Sequence[FleetEvent]) -> None:
        """Append fleet events."""
        with self.session() as s:
            s.add_all(events)

    def events(self, limit: int) -> list[FleetEvent]:
        """The newest `limit` events, oldest first."""
        with self.session() as s:
            rows = s.exec(select(FleetEvent).order_by(col(FleetEvent.id).desc()).limit(limit)).all()
            return list(reversed(rows))

    def add_logs(self, rows: Sequence[Mapping[str, Any]], retention: int) -> None:
        """Append invocation records (one Core executemany of `InvocationLog` columns, no ORM
        objects: this runs at the rate of invocations), keeping the newest `retention` per function."""
        with self.session() as s:
            s.execute(InvocationLog.__table__.insert(), list(rows))  # type: ignore[attr-defined]
            for name in {r["function"] for r in rows}:
                count = s.exec(select(func.count()).where(InvocationLog.function == name)).one()
                if count > retention:
                    cutoff = s.exec(select(InvocationLog.id).where(InvocationLog.function == name)
                                    .order_by(col(InvocationLog.id).desc())
                                    .offset(retention).limit(1)).first()
                    if cutoff is not None:
                        s.exec(delete(InvocationLog).where(
                            col(InvocationLog.function) == name, col(InvocationLog.id) <= cutoff))

    def logs(self, name: str, limit: int) -> list[InvocationLog]:
        """The newest `limit` invocation records of a function, oldest first."""
        with self.session() as s:
            rows = s.exec(select(InvocationLog).where(InvocationLog.function == name)
                          .order_by(col(InvocationLog.id).desc()).limit(limit)).all()
            return list(reversed(rows))
