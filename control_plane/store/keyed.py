"""Units of work on tables of tenant-named objects keyed by `key` (`tenant/name`): schedules, the
bus's rules. One implementation, so that each such repository says only what is its own."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from sqlmodel import Session, SQLModel, col, select

T = TypeVar("T", bound=SQLModel)
Sessions = Callable[[], AbstractContextManager[Session]]


def add_keyed(sessions: Sessions, table: type[T], row: dict[str, Any]) -> T | None:
    """Store a new row; None if its key is taken."""
    with sessions() as s:
        if s.get(table, row["key"]) is not None:
            return None
        made = table(**row)
        s.add(made)
        s.flush()
        s.expunge(made)
        return made


def get_keyed(sessions: Sessions, table: type[T], key: str) -> T | None:
    with sessions() as s:
        return s.get(table, key)


def list_keyed(sessions: Sessions, table: type[T], tenant: str | None) -> list[T]:
    """A tenant's rows (every tenant's for None), by key."""
    with sessions() as s:
        q = select(table)
        if tenant is not None:
            q = q.where(col(table.tenant) == tenant)  # type: ignore[attr-defined]
        return list(s.exec(q.order_by(col(table.key))).all())  # type: ignore[attr-defined]


def delete_keyed(sessions: Sessions, table: type[T], key: str) -> bool:
    """Delete a row; False if there was none."""
    with sessions() as s:
        row = s.get(table, key)
        if row is None:
            return False
        s.delete(row)
        return True
