"""Async invocations: each call's state and attempts (fenced by compare-and-set, so that two workers
that both got its job — at-least-once — never both run one attempt), and the dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select

from control_plane.store.tables import AsyncInvocation, DeadLetter
from control_plane.store.unit import Repository

TERMINAL = ("succeeded", "failed", "dead_lettered")


class AsyncCallRepository(Repository):
    """Async calls and dead letters."""

    def record_async_call(self, row: dict[str, Any]) -> bool:
        """Insert the call (`AsyncInvocation` fields) unless it is known; True if new."""
        with self.session() as s:
            insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
            table = AsyncInvocation.__table__  # type: ignore[attr-defined]
            stmt = insert(table).values(**row).on_conflict_do_nothing().returning(table.c.request_id)
            return bool(s.execute(stmt).all())

    def record_async_calls(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert the calls unless known, in one statement; how many were new."""
        if not rows:
            return 0
        with self.session() as s:
            insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
            table = AsyncInvocation.__table__  # type: ignore[attr-defined]
            stmt = insert(table).on_conflict_do_nothing().returning(table.c.request_id)
            return len(s.execute(stmt, list(rows)).all())

    def async_call(self, request_id: str) -> AsyncInvocation | None:
        with self.session() as s:
            return s.get(AsyncInvocation, request_id)

    def move_async_call(self, request_id: str, *, was: tuple[str, int], to: dict[str, Any]) -> bool:
        """Set the call's fields `to` if it is still in state `was` (state, attempts); False if it
        moved on meanwhile (another worker got there first)."""
        with self.session() as s:
            result = s.execute(update(AsyncInvocation)
                               .where(col(AsyncInvocation.request_id) == request_id,
                                      col(AsyncInvocation.state) == was[0],
                                      col(AsyncInvocation.attempts) == was[1])
                               .values(**to))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def count_duplicate(self, request_id: str) -> None:
        """One more delivery of an attempt that had already run (or may have)."""
        with self.session() as s:
            s.execute(update(AsyncInvocation).where(col(AsyncInvocation.request_id) == request_id)
                      .values(duplicates=col(AsyncInvocation.duplicates) + 1))

    def async_calls(self, *, function: str | None = None, tenant: str | None = None,
                    states: Sequence[str] = (), limit: int = 100) -> list[AsyncInvocation]:
        """Newest first."""
        with self.session() as s:
            q = select(AsyncInvocation)
            if function is not None:
                q = q.where(col(AsyncInvocation.function) == function)
            if tenant is not None:
                q = q.where(col(AsyncInvocation.tenant) == tenant)
            if states:
                q = q.where(col(AsyncInvocation.state).in_(list(states)))
            return list(s.exec(q.order_by(col(AsyncInvocation.enqueued_at).desc()).limit(limit)).all())

    def dead_letter(self, request_id: str, *, attempts: int, from_state: str, letter: dict[str, Any],
                    now: float) -> bool:
        """The call ends dead-lettered and its letter is kept, in one transaction (if the call is
        still where the caller saw it)."""
        with self.session() as s:
            result = s.execute(update(AsyncInvocation)
                               .where(col(AsyncInvocation.request_id) == request_id,
                                      col(AsyncInvocation.state) == from_state,
                                      col(AsyncInvocation.attempts) == attempts)
                               .values(state="dead_lettered", updated_at=now, next_attempt_at=None,
                                       error=letter.get("error")))
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            s.merge(DeadLetter(request_id=request_id, dead_at=now, attempts=attempts, **letter))
            return True

    def dead_letters(self, *, function: str | None = None, tenant: str | None = None,
                     limit: int = 100) -> list[DeadLetter]:
        """Newest first."""
        with self.session() as s:
            q = select(DeadLetter)
            if function is not None:
                q = q.where(col(DeadLetter.function) == function)
            if tenant is not None:
                q = q.where(col(DeadLetter.tenant) == tenant)
            return list(s.exec(q.order_by(col(DeadLetter.dead_at).desc()).limit(limit)).all())

    def take_dead_letters(self, function: str, request_ids: Sequence[str] = (), *,
                          now: float) -> list[DeadLetter]:
        """Remove the function's dead letters (those named, or all) and put their calls back in the
        `queued` state with no attempts (a redrive); what was removed is returned, to be queued."""
        with self.session() as s:
            q = select(DeadLetter).where(col(DeadLetter.function) == function)
            if request_ids:
                q = q.where(col(DeadLetter.request_id).in_(list(request_ids)))
            letters = list(s.exec(q).all())
            taken = [DeadLetter.model_validate(letter.model_dump()) for letter in letters]
            for letter in letters:
                s.execute(update(AsyncInvocation).where(col(AsyncInvocation.request_id) == letter.request_id)
                          .values(state="queued", attempts=0, updated_at=now, enqueued_at=now, error=None,
                                  next_attempt_at=None))
                s.delete(letter)
            return taken
