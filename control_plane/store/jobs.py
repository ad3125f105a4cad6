"""The durable queue's jobs in the database (what `control_plane.jobs.StoreQueue` stands on).

A take is one statement: an UPDATE of the rows a sub-select picks, `FOR UPDATE SKIP LOCKED` on
PostgreSQL (concurrent takers, on one or several control planes, each get other rows and never
wait for one another), plain on SQLite (whose writers take turns anyway). A lease is fenced by its
token: `extend`, `finish` and `retry` change the row only while it still holds that token.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Integer, Table, and_, bindparam, delete, func, or_, select
from sqlalchemy.engine import Row
from sqlmodel import col

from control_plane.store.tables import QueuedJob
from control_plane.store.unit import Repository, insert_new

# The statements are built once (SQL Core, bound parameters `b_*`): building and running one
# through an ORM session costs eight times as much on SQLite, and these run several times a call.
_T: Table = QueuedJob.__table__  # type: ignore[attr-defined]
_READY = (select(_T.c.id)
          .where(_T.c.queue == bindparam("b_queue"), _T.c.done_at.is_(None),
                 _T.c.available_at <= bindparam("b_now"),
                 or_(_T.c.lease_until.is_(None), _T.c.lease_until < bindparam("b_now")))
          .order_by(_T.c.available_at).limit(bindparam("b_limit", type_=Integer))
          .with_for_update(skip_locked=True))
_TAKE = (_T.update().where(_T.c.id.in_(_READY.scalar_subquery()))
         .values(lease_token=bindparam("b_token"), lease_until=bindparam("b_until"),
                 deliveries=_T.c.deliveries + 1)
         .returning(*_T.c))
_FORGET = delete(_T).where(_T.c.queue == bindparam("b_queue"),
                           _T.c.key.in_(bindparam("b_keys", expanding=True)),
                           _T.c.done_at < bindparam("b_before"))


def _fence(**values: Any) -> Any:
    return (_T.update().where(and_(_T.c.id == bindparam("b_id"), _T.c.lease_token == bindparam("b_token"),
                                   _T.c.done_at.is_(None)))
            .values(**values))


_EXTEND = _fence(lease_until=bindparam("b_until"))
_FINISH = _fence(done_at=bindparam("b_now"), lease_token=None, lease_until=None)
_RETRY = _fence(available_at=bindparam("b_at"), lease_token=None, lease_until=None)
_PUT = insert_new(_T, _T.c.queue, _T.c.key)
_DEPTH = (select(func.count()).select_from(_T)
          .where(_T.c.queue == bindparam("b_queue"), _T.c.done_at.is_(None)))


class JobRepository(Repository):
    """Jobs: put (idempotent by queue and key), take with a lease, extend, finish, retry."""

    def put_jobs(self, jobs: Sequence[dict[str, Any]], *, now: float, dedupe_s: float) -> list[bool]:
        """Insert jobs (`queue`, `key`, `body`, `available_at`) in one transaction; True for each
        new one. A key done more than `dedupe_s` ago is forgotten first, and so is new again."""
        if not jobs:
            return []
        by_queue: dict[str, list[str]] = {}
        for job in jobs:
            by_queue.setdefault(job["queue"], []).append(job["key"])
        rows = [{"queue": j["queue"], "key": j["key"], "body": j["body"], "available_at": j["available_at"],
                 "deliveries": 0, "created_at": now} for j in jobs]
        with self.connection() as c:
            for queue, keys in by_queue.items():
                c.execute(_FORGET, {"b_queue": queue, "b_keys": keys, "b_before": now - dedupe_s})
            new = {(r.queue, r.key) for r in c.execute(_PUT[self.engine.dialect.name], rows).all()}
        seen: set[tuple[str, str]] = set()
        out = []
        for job in jobs:  # the same key twice in one put: the second is a duplicate
            ident = (job["queue"], job["key"])
            out.append(ident in new and ident not in seen)
            seen.add(ident)
        return out

    def take_jobs(self, queue: str, limit: int, *, now: float, lease_s: float) -> list[Row[Any]]:
        """Lease up to `limit` jobs of `queue` whose time has come and whose lease (if any) ended
        (rows with `QueuedJob`'s fields)."""
        token = uuid.uuid4().hex
        with self.connection() as c:
            taken = list(c.execute(_TAKE, {"b_queue": queue, "b_now": now, "b_limit": limit, "b_token": token,
                                           "b_until": now + lease_s}).all())
        taken.sort(key=lambda j: j.available_at)
        return taken

    def _fenced(self, stmt: Any, job_id: int, token: str, **params: Any) -> bool:
        with self.connection() as c:
            return bool(c.execute(stmt, {"b_id": job_id, "b_token": token, **params}).rowcount)

    def extend_job(self, job_id: int, token: str, *, until: float) -> bool:
        """The lease lasts until `until`; False if the job went to another (or is done)."""
        return self._fenced(_EXTEND, job_id, token, b_until=until)

    def finish_job(self, job_id: int, token: str, *, now: float) -> bool:
        """The job is done (kept as a tombstone for dedupe); False if it went to another."""
        return self._fenced(_FINISH, job_id, token, b_now=now)

    def retry_job(self, job_id: int, token: str, *, available_at: float) -> bool:
        """Back in the queue from `available_at`; False if it went to another."""
        return self._fenced(_RETRY, job_id, token, b_at=available_at)

    def job_depth(self, queue: str) -> int:
        """Jobs of `queue` not done."""
        with self.connection() as c:
            return int(c.execute(_DEPTH, {"b_queue": queue}).scalar_one())

    def purge_done_jobs(self, *, before: float) -> int:
        """Forget tombstones of jobs done before `before` (past the dedupe window)."""
        with self.session() as s:
            result = s.execute(delete(QueuedJob).where(col(QueuedJob.done_at) < before))
            return int(result.rowcount)  # type: ignore[attr-defined]
