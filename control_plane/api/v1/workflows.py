"""`/v1/workflows` and `/v1/executions`: state machines (Amazon States Language) and their runs.

A workflow is named like a function, in its tenant, and guarded the same way: deploying it needs
`deploy` on its name (and `invoke` on every function its Tasks run, so that a workflow lends no
one more than its author may do), starting it `invoke`, reading its executions `logs`."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from control_plane.api.deps import CurrentUser, ServicesDep
from control_plane.api.openapi import errors
from control_plane.core import InvalidConfig, NotFound
from control_plane.identity import Admin, FunctionRef, Permission, Principal, allowed, authorize
from control_plane.workflows import InvalidDefinition, parse, resource_function, task_resources

router = APIRouter(tags=["workflows"])

NAME = r"^([a-z][a-z0-9-]{0,62}/)?[a-z][a-z0-9-]{0,62}$"


class WorkflowCreate(BaseModel):
    name: str = Field(pattern=NAME, description="NAME (the caller's tenant) or TENANT/NAME")
    definition: Any = Field(description="the state machine: an object, or its JSON or YAML text")


class WorkflowPublic(BaseModel):
    key: str
    tenant: str
    name: str
    definition: Any
    updated_at: float


class ExecutionStart(BaseModel):
    input: Any = Field(default_factory=dict)
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,80}$")


class ExecutionPublic(BaseModel):
    id: str
    workflow: str
    name: str
    status: str
    input: Any
    output: Any
    error: str | None
    cause: str | None
    started_at: float
    ended_at: float | None


class HistoryEventPublic(BaseModel):
    seq: int
    type: str
    state_name: str | None
    timestamp: float
    details: dict[str, Any]


def _execution(row: Any) -> ExecutionPublic:
    output = None if row.output is None else json.loads(row.output)
    return ExecutionPublic(id=row.id, workflow=row.workflow, name=row.name, status=row.status,
                           input=json.loads(row.input), output=output, error=row.error, cause=row.cause,
                           started_at=row.started_at, ended_at=row.ended_at)


def _public(row: Any) -> WorkflowPublic:
    return WorkflowPublic(key=row.key, tenant=row.tenant, name=row.name,
                          definition=json.loads(row.definition), updated_at=row.updated_at)


async def _workflow(svc: ServicesDep, user: Principal, ref: str, action: Permission | Admin) -> Any:
    key = FunctionRef.parse(ref, user.tenant)
    authorize(user, action, key)
    row = await run_in_threadpool(svc.store.workflow, key.key)
    if row is None:
        raise NotFound(f"no workflow {ref!r}")
    return row


@router.post("/v1/workflows", status_code=201, responses=errors(400, 401, 403, 422))
async def deploy_workflow(body: WorkflowCreate, svc: ServicesDep, user: CurrentUser) -> WorkflowPublic:
    """Deploy a workflow (a new definition for an existing one: running executions keep theirs)."""
    ref = FunctionRef.parse(body.name, user.tenant)
    authorize(user, Permission.DEPLOY, ref)
    try:
        machine = parse(body.definition if isinstance(body.definition, str) else json.dumps(body.definition))
    except InvalidDefinition as exc:
        raise InvalidConfig(f"invalid state machine: {exc}") from None
    for resource in task_resources(machine.definition):
        authorize(user, Permission.INVOKE, FunctionRef.of_key(resource_function(resource, ref.tenant)))
    return _public(await svc.workflows.deploy(key=ref.key, tenant=ref.tenant, name=ref.name,
                                              definition=body.definition))


@router.get("/v1/workflows", responses=errors(401, 403))
async def list_workflows(svc: ServicesDep, user: CurrentUser) -> list[WorkflowPublic]:
    """The caller's tenant's workflows it may see."""
    rows = await run_in_threadpool(svc.store.workflows, user.tenant)
    return [_public(r) for r in rows if allowed(user, Admin.READ, FunctionRef.of_key(r.key))]


@router.get("/v1/workflows/{ref:path}/executions", responses=errors(401, 403, 404, 422))
async def list_executions(ref: str, svc: ServicesDep, user: CurrentUser,
                          status: Annotated[str | None,
                                            Query(pattern="^(RUNNING|SUCCEEDED|FAILED)$")] = None,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[ExecutionPublic]:
    """A workflow's executions, newest first (the `logs` permission)."""
    wf = await _workflow(svc, user, ref, Permission.LOGS)
    rows = await run_in_threadpool(lambda: svc.store.executions(workflow=wf.key, status=status, limit=limit))
    return [_execution(r) for r in rows]


@router.post("/v1/workflows/{ref:path}/executions", status_code=201,
             responses=errors(400, 401, 403, 404, 409, 422, 503))
async def start_execution(ref: str, svc: ServicesDep, user: CurrentUser,
                          body: ExecutionStart | None = None) -> ExecutionPublic:
    """Start an execution (the `invoke` permission)."""
    wf = await _workflow(svc, user, ref, Permission.INVOKE)
    start = body or ExecutionStart()
    execution_id = await svc.workflows.start(wf.key, start.input, name=start.name)
    return _execution(await run_in_threadpool(svc.store.execution, execution_id))


@router.get("/v1/workflows/{ref:path}", responses=errors(401, 403, 404))
async def get_workflow(ref: str, svc: ServicesDep, user: CurrentUser) -> WorkflowPublic:
    """One workflow and its definition."""
    return _public(await _workflow(svc, user, ref, Admin.READ))


@router.delete("/v1/workflows/{ref:path}", status_code=204, responses=errors(401, 403, 404))
async def delete_workflow(ref: str, svc: ServicesDep, user: CurrentUser) -> Response:
    """Delete a workflow (running executions go on, with their own definition)."""
    row = await _workflow(svc, user, ref, Permission.DEPLOY)
    await run_in_threadpool(svc.store.delete_workflow, row.key)
    return Response(status_code=204)


async def _run(svc: ServicesDep, user: Principal, execution_id: str) -> Any:
    row = await run_in_threadpool(svc.store.execution, execution_id)
    # Whether it exists or not, another tenant's execution is refused alike (ids are not secrets).
    authorize(user, Permission.LOGS, FunctionRef.of_key(row.workflow) if row is not None
              else FunctionRef(user.tenant, "unknown-execution"))
    if row is None:
        raise NotFound(f"no execution {execution_id!r}")
    return row


@router.get("/v1/executions/{execution_id}", responses=errors(401, 403, 404))
async def describe_execution(execution_id: str, svc: ServicesDep, user: CurrentUser) -> ExecutionPublic:
    """An execution: its status, input, output or error (the `logs` permission on its workflow)."""
    return _execution(await _run(svc, user, execution_id))


@router.get("/v1/executions/{execution_id}/history", responses=errors(401, 403, 404, 422))
async def execution_history(execution_id: str, svc: ServicesDep, user: CurrentUser,
                            after: Annotated[int, Query(ge=0)] = 0,
                            limit: Annotated[int, Query(ge=1, le=1000)] = 1000) -> list[HistoryEventPublic]:
    """An execution's history: states entered and exited with their input and output, tasks and
    their results or errors, in order (page with `after`, the last `seq` seen)."""
    row = await _run(svc, user, execution_id)
    events = await run_in_threadpool(lambda: svc.store.execution_history(row.id, after=after,
                                                                         limit=limit))
    return [HistoryEventPublic(seq=e.seq, type=e.type, state_name=e.state_name, timestamp=e.timestamp,
                               details=e.details) for e in events]
