"""The event bus's rules, per tenant."""

from __future__ import annotations

from typing import Any

from sqlmodel import func, select

from control_plane.store.keyed import add_keyed, delete_keyed, get_keyed, list_keyed
from control_plane.store.tables import BusRule
from control_plane.store.unit import Repository


class BusRepository(Repository):
    """Rules of every tenant's bus."""

    def add_rule(self, row: dict[str, Any]) -> BusRule | None:
        """Store a new rule; None if its key is taken."""
        return add_keyed(self.session, BusRule, row)

    def rule(self, key: str) -> BusRule | None:
        return get_keyed(self.session, BusRule, key)

    def rules(self, tenant: str | None = None) -> list[BusRule]:
        """By key."""
        return list_keyed(self.session, BusRule, tenant)

    def delete_rule(self, key: str) -> bool:
        return delete_keyed(self.session, BusRule, key)

    def rules_mark(self) -> tuple[int, float]:
        """How many rules there are and when the newest was made: changes when rules do (a cheap
        check before reloading them)."""
        with self.session() as s:
            count, newest = s.exec(select(func.count(), func.max(BusRule.created_at))).one()
            return int(count), float(newest or 0.0)
