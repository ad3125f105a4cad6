"""`Store`: the one door to the database, one repository per job over one unit of work."""

from __future__ import annotations

from control_plane.store.accounts import AccountRepository
from control_plane.store.async_calls import AsyncCallRepository
from control_plane.store.bus import BusRepository
from control_plane.store.cluster import ClusterRepository
from control_plane.store.engine import Database
from control_plane.store.functions import FunctionRepository
from control_plane.store.intents import IntentRepository
from control_plane.store.jobs import JobRepository
from control_plane.store.nodes import NodeRepository
from control_plane.store.schedules import ScheduleRepository
from control_plane.store.telemetry import TelemetryRepository
from control_plane.store.usage import UsageRepository
from control_plane.store.workflows import WorkflowRepository


class Store(Database, FunctionRepository, AccountRepository, NodeRepository, IntentRepository,
            ClusterRepository, TelemetryRepository, UsageRepository, JobRepository,
            AsyncCallRepository, ScheduleRepository, BusRepository, WorkflowRepository):
    """Functions and versions, accounts (tenants, users, tokens, grants), nodes and join tokens,
    intents, the cluster (members, lease, secrets), events and invocation logs, usage and budgets,
    the durable queue's jobs, async calls and dead letters, schedules, the event bus's rules,
    workflows and their executions.
    Every method is one unit of work, called on a thread. On the invocation path: a function's
    version at its first call, a token lookup when the token cache misses, and the instance
    intents of a cold start."""
