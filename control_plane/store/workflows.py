"""Workflows, their executions (moved on by compare-and-set on a version) and histories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import update
from sqlmodel import col, func, select

from control_plane.store.keyed import delete_keyed, get_keyed, list_keyed
from control_plane.store.tables import Workflow, WorkflowEvent, WorkflowExecution
from control_plane.store.unit import Repository


class WorkflowRepository(Repository):
    """State machines, executions, history."""

    def put_workflow(self, row: dict[str, Any]) -> Workflow:
        """Store a workflow, or its new definition (running executions keep theirs)."""
        with self.session() as s:
            found = s.get(Workflow, row["key"])
            if found is None:
                found = Workflow(**row)
                s.add(found)
            else:
                found.definition, found.updated_at = row["definition"], row["updated_at"]
            s.flush()
            s.expunge(found)
            return found

    def workflow(self, key: str) -> Workflow | None:
        return get_keyed(self.session, Workflow, key)

    def workflows(self, tenant: str | None = None) -> list[Workflow]:
        return list_keyed(self.session, Workflow, tenant)

    def delete_workflow(self, key: str) -> bool:
        return delete_keyed(self.session, Workflow, key)

    def start_execution(self, row: dict[str, Any], history: Sequence[dict[str, Any]]) -> bool:
        """Store a new execution and its first history events; False if its id is taken."""
        with self.session() as s:
            if s.get(WorkflowExecution, row["id"]) is not None:
                return False
            s.add(WorkflowExecution(**row))
            for seq, event in enumerate(history, 1):
                s.add(WorkflowEvent(execution=row["id"], seq=seq, **event))
            return True

    def execution(self, execution_id: str) -> WorkflowExecution | None:
        with self.session() as s:
            return s.get(WorkflowExecution, execution_id)

    def executions(self, *, workflow: str | None = None, tenant: str | None = None,
                   status: str | None = None, limit: int = 100) -> list[WorkflowExecution]:
        """Newest first."""
        with self.session() as s:
            q = select(WorkflowExecution)
            for column, value in ((WorkflowExecution.workflow, workflow),
                                  (WorkflowExecution.tenant, tenant), (WorkflowExecution.status, status)):
                if value is not None:
                    q = q.where(col(column) == value)
            return list(s.exec(q.order_by(col(WorkflowExecution.started_at).desc()).limit(limit)).all())

    def advance_execution(self, execution_id: str, *, version: int, values: dict[str, Any],
                          history: Sequence[dict[str, Any]]) -> bool:
        """Move the execution on from `version` (its state, status, outcome) and append history, in
        one transaction; False if another worker moved it first."""
        with self.session() as s:
            result = s.execute(update(WorkflowExecution)
                               .where(col(WorkflowExecution.id) == execution_id,
                                      col(WorkflowExecution.version) == version)
                               .values(version=version + 1, **values))
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            if history:
                last = s.exec(select(func.max(WorkflowEvent.seq))
                              .where(col(WorkflowEvent.execution) == execution_id)).one() or 0
                for seq, event in enumerate(history, int(last) + 1):
                    s.add(WorkflowEvent(execution=execution_id, seq=seq, **event))
            return True

    def execution_history(self, execution_id: str, *, after: int = 0,
                          limit: int = 1000) -> list[WorkflowEvent]:
        with self.session() as s:
            return list(s.exec(select(WorkflowEvent).where(col(WorkflowEvent.execution) == execution_id,
                                                           col(WorkflowEvent.seq) > after)
                               .order_by(col(WorkflowEvent.seq)).limit(limit)).all())
