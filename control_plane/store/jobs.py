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

from sqlalchemy import and_, delete, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, func, select

from control_plane.store.tables import QueuedJob
from control_plane.store.unit import Repository


class JobRepository(Repository):
    """Jobs: put (idempotent by queue and key), take with a lease, extend, finish, retry."""

    def put_jobs(self, jobs: Sequence[dict[str, Any]], *, now: float, dedupe_s: float) -> list[bool]:
        """Insert jobs (`queue`, `key`, `body`, `available_at`) in one transaction; True for each
        new one. A key done more than `dedupe_s` ago is forgotten first, and so is new again."""
        if not jobs:
            return []
        with self.session() as s:
            insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
            table = QueuedJob.__table__  # type: ignore[attr-defined]
            by_queue: dict[str, list[str]] = {}
            for job in jobs:
                by_queue.setdefault(job["queue"], []).append(job["key"])
            for queue, keys in by_queue.items():
                s.execute(delete(QueuedJob).where(col(QueuedJob.queue) == queue,
                                                  col(QueuedJob.key).in_(keys),
                                                  col(QueuedJob.done_at) < now - dedupe_s))
            stmt = insert(table).on_conflict_do_nothing().returning(table.c.queue, table.c.key)
            rows = [{"queue": j["queue"], "key": j["key"], "body": j["body"],
                     "available_at": j["available_at"], "deliveries": 0, "created_at": now} for j in jobs]
            new = {(r.queue, r.key) for r in s.execute(stmt, rows).all()}
        seen: set[tuple[str, str]] = set()
        out = []
        for job in jobs:  # the same key twice in one put: the second is a duplicate
            ident = (job["queue"], job["key"])
            out.append(ident in new and ident not in seen)
            seen.add(ident)
        return out

    def take_jobs(self, queue: str, limit: int, *, now: float, lease_s: float) -> list[QueuedJob]:
        """Lease up to `limit` jobs of `queue` whose time has come and whose lease (if any) ended."""
        token = uuid.uuid4().hex
        with self.session() as s:
            ready = (select(QueuedJob.id)
                     .where(col(QueuedJob.queue) == queue, col(QueuedJob.done_at).is_(None),
                            col(QueuedJob.available_at) <= now,
                            or_(col(QueuedJob.lease_until).is_(None), col(QueuedJob.lease_until) < now))
                     .order_by(col(QueuedJob.available_at)).limit(limit)
                     .with_for_update(skip_locked=True))
            stmt = (update(QueuedJob).where(col(QueuedJob.id).in_(ready.scalar_subquery()))
                    .values(lease_token=token, lease_until=now + lease_s,
                            deliveries=col(QueuedJob.deliveries) + 1)
                    .returning(QueuedJob))
            taken = [row[0] for row in s.execute(stmt).all()]
            for job in taken:
                s.expunge(job)
        taken.sort(key=lambda j: j.available_at)
        return taken

    def _fenced(self, job_id: int, token: str, **values: Any) -> bool:
        with self.session() as s:
            result = s.execute(update(QueuedJob)
                               .where(and_(col(QueuedJob.id) == job_id, col(QueuedJob.lease_token) == token,
                                           col(QueuedJob.done_at).is_(None)))
                               .values(**values))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def extend_job(self, job_id: int, token: str, *, until: float) -> bool:
        """The lease lasts until `until`; False if the job went to another (or is done)."""
        return self._fenced(job_id, token, lease_until=until)

    def finish_job(self, job_id: int, token: str, *, now: float) -> bool:
        """The job is done (kept as a tombstone for dedupe); False if it went to another."""
        return self._fenced(job_id, token, done_at=now, lease_token=None, lease_until=None)

    def retry_job(self, job_id: int, token: str, *, available_at: float) -> bool:
        """Back in the queue from `available_at`; False if it went to another."""
        return self._fenced(job_id, token, available_at=available_at, lease_token=None, lease_until=None)

    def job_depth(self, queue: str) -> int:
        """Jobs of `queue` not done."""
        with self.session() as s:
            return int(s.exec(select(func.count()).select_from(QueuedJob)
                              .where(col(QueuedJob.queue) == queue, col(QueuedJob.done_at).is_(None))).one())

    def purge_done_jobs(self, *, before: float) -> int:
        """Forget tombstones of jobs done before `before` (past the dedupe window)."""
        with self.session() as s:
            result = s.execute(delete(QueuedJob).where(col(QueuedJob.done_at) < before))
            return int(result.rowcount)  # type: ignore[attr-defined]
