"""Async invocations: each call's state and attempts (fenced by compare-and-set, so that two workers
that both got its job — at-least-once — never both run one attempt), and the dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, bindparam, update
from sqlalchemy.engine import Row
from sqlmodel import col, select

from control_plane.store.tables import AsyncInvocation, DeadLetter
from control_plane.store.unit import Repository, insert_new

TERMINAL = ("succeeded", "failed", "dead_lettered")

# The async path's statements, built once (SQL Core with bound parameters `b_*`, `v_*`): see
# `control_plane.store.jobs`.
_A: Table = AsyncInvocation.__table__  # type: ignore[attr-defined]
_RECORD = insert_new(_A, _A.c.request_id)
_GET = _A.select().where(_A.c.request_id == bindparam("b_rid"))
# The compare-and-set: an UPDATE of the call `b_rid` only while it is in (`b_state`, `b_attempts`).
_CAS = _A.update().where(_A.c.request_id == bindparam("b_rid"), _A.c.state == bindparam("b_state"),
                         _A.c.attempts == bindparam("b_attempts"))
_MOVES: dict[tuple[str, ...], Any] = {}


def _move(fields: tuple[str, ...]) -> Any:
    """The compare-and-set of `fields` (from `v_<field>`), built once per set of fields."""
    stmt = _MOVES.get(fields)
    if stmt is None:
        stmt = _MOVES[fields] = _CAS.values({f: bindparam(f"v_{f}", type_=_A.c[f].type) for f in fields})
    return stmt


_DUPLICATE = _A.update().where(_A.c.request_id == bindparam("b_rid")).values(duplicates=_A.c.duplicates + 1)
_RUN = _CAS.values(state="running", attempts=bindparam("v_attempts"), updated_at=bindparam("v_now"),
                   next_attempt_at=None, duplicates=_A.c.duplicates + bindparam("v_again"))


class AsyncCallRepository(Repository):
    """Async calls and dead letters."""

    def record_async_call(self, row: dict[str, Any]) -> bool:
        """Insert the call (`AsyncInvocation` fields) unless it is known; True if new."""
        return self.record_async_calls([row]) == 1

    def record_async_calls(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert the calls unless known, in one statement; how many were new."""
        if not rows:
            return 0
        with self.connection() as c:
            return len(c.execute(_RECORD[self.engine.dialect.name], list(rows)).all())

    def async_call(self, request_id: str) -> Row[Any] | None:
        """The call (a row with `AsyncInvocation`'s fields), or None."""
        with self.connection() as c:
            return c.execute(_GET, {"b_rid": request_id}).first()

    def begin_attempt(self, row: dict[str, Any], *, now: float) -> tuple[str, int]:
        """A delivery of the call's job starts, in one transaction. The call is recorded first if
        its enqueue died before it was (`row`); then, if it has ended, the delivery is a duplicate
        (counted): ("ended", attempts). If it is running (its last worker died, or its job came
        twice) the same attempt runs again and is counted as a duplicate; otherwise the next
        attempt starts: ("run", attempt), the call `running`. ("raced", attempts) if another
        worker moved it meanwhile (compare-and-set on state and attempts)."""
        with self.connection() as c:
            c.execute(_RECORD[self.engine.dialect.name], [row])  # a write first: SQLite's lock is ours
            call = c.execute(_GET, {"b_rid": row["request_id"]}).one()
            if call.state in TERMINAL:
                c.execute(_DUPLICATE, {"b_rid": call.request_id})
                return "ended", int(call.attempts)
            again = call.state == "running"
            attempt = call.attempts if again else call.attempts + 1
            moved = c.execute(_RUN, {"b_rid": call.request_id, "b_state": call.state,
                                     "b_attempts": call.attempts, "v_attempts": attempt, "v_now": now,
                                     "v_again": int(again)}).rowcount
            return ("run" if moved else "raced"), int(attempt)

    def move_async_call(self, request_id: str, *, was: tuple[str, int], to: dict[str, Any]) -> bool:
        """Set the call's fields `to` if it is still in state `was` (state, attempts); False if it
        moved on meanwhile (another worker got there first)."""
        fields = tuple(sorted(to))
        with self.connection() as c:
            result = c.execute(_move(fields), {"b_rid": request_id, "b_state": was[0], "b_attempts": was[1],
                                               **{f"v_{f}": to[f] for f in fields}})
            return bool(result.rowcount)

    def count_duplicate(self, request_id: str) -> None:
        """One more delivery of an attempt that had already run (or may have)."""
        with self.connection() as c:
            c.execute(_DUPLICATE, {"b_rid": request_id})

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
