"""Usage: invocation and instance records (idempotent by request id, by instance id), their sums,
budget alerts and the tenants over their budget."""

from __future__ import annotations

import datetime as dt
import functools
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import case, func
from sqlalchemy import select as aggregate
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from control_plane.store.accounts import _bump
from control_plane.store.tables import BudgetAlert, InstanceUsage, InvocationUsage, Tenant
from control_plane.store.unit import Repository

OK = "ok"  # the outcome of a call that returned (every other outcome is an error)


def utc_day(ts: float) -> str:
    """`YYYY-MM-DD` of a timestamp, in UTC."""
    return _day(int(ts // 86_400))


@functools.lru_cache(maxsize=64)
def _day(days: int) -> str:  # (records come by the thousand, of a few days)
    return dt.datetime.fromtimestamp(days * 86_400, dt.UTC).strftime("%Y-%m-%d")


def ceil_ms(value_ms: float) -> int:
    """Milliseconds rounded up (a float's last bit never makes a whole extra millisecond)."""
    return max(0, math.ceil(round(value_ms, 3)))  # µs: epoch floats are good to ~0.24 µs only


def invocation_row(tenant: str, node_id: str, rec: Mapping[str, Any]) -> dict[str, Any]:
    """An `InvocationUsage` row from a node's record (see `node_agent.protocol.UsageRecord`)."""
    billed = max(1, math.ceil(rec["duration_us"] / 1000))  # rounded up to 1 ms, at least 1 ms
    day = utc_day(rec["started_at"])
    return {"request_id": rec["request_id"], "tenant": tenant, "function": rec["function"],
            "version": rec["version"], "instance_id": rec["instance_id"], "node_id": node_id,
            "started_at": rec["started_at"], "day": day, "month": day[:7], "duration_us": rec["duration_us"],
            "billed_ms": billed, "memory_mib": rec["memory_mib"], "mib_ms": billed * rec["memory_mib"],
            "init_ms": ceil_ms(rec["init_ms"]), "outcome": rec["outcome"]}


def instance_row(tenant: str, node_id: str, rec: Mapping[str, Any]) -> dict[str, Any]:
    """An `InstanceUsage` row from a node's record."""
    lifetime = ceil_ms((rec["ended_at"] - rec["started_at"]) * 1000)
    busy = min(lifetime, ceil_ms(rec["busy_ms"]))
    day = utc_day(rec["ended_at"])
    return {"instance_id": rec["instance_id"], "tenant": tenant, "function": rec["function"],
            "version": rec["version"], "node_id": node_id, "memory_mib": rec["memory_mib"],
            "started_at": rec["started_at"], "ended_at": rec["ended_at"], "day": day, "month": day[:7],
            "lifetime_ms": lifetime, "busy_ms": busy, "idle_ms": lifetime - busy,
            "init_ms": ceil_ms(rec["init_ms"])}


class UsageRepository(Repository):
    """Metered usage, budgets and the tenants over them."""

    def add_usage(self, invocations: Sequence[dict[str, Any]], instances: Sequence[dict[str, Any]]) -> int:
        """Store rows (from `invocation_row`, `instance_row`) that are not stored yet, in one
        transaction; returns how many were new. Storing the same rows again changes nothing."""
        new = 0
        with self.session() as s:
            for table, rows, key in ((InvocationUsage, invocations, "request_id"),
                                     (InstanceUsage, instances, "instance_id")):
                if rows:
                    unique = list({r[key]: r for r in rows}.values())
                    new += _insert_new(s, table, unique)
        return new

    def usage_rows(self, tenant: str | None = None, month: str | None = None) -> list[InvocationUsage]:
        """Every invocation record (of a tenant, of a month), oldest first."""
        with self.session() as s:
            query = select(InvocationUsage)
            if tenant is not None:
                query = query.where(InvocationUsage.tenant == tenant)
            if month is not None:
                query = query.where(InvocationUsage.month == month)
            return list(s.exec(query.order_by(col(InvocationUsage.started_at))).all())

    def instance_rows(self, tenant: str | None = None, month: str | None = None) -> list[InstanceUsage]:
        """Every instance record (of a tenant, of the month it ended in)."""
        with self.session() as s:
            query = select(InstanceUsage)
            if tenant is not None:
                query = query.where(InstanceUsage.tenant == tenant)
            if month is not None:
                query = query.where(InstanceUsage.month == month)
            return list(s.exec(query.order_by(col(InstanceUsage.ended_at))).all())

    def usage_summary(self, tenants: Sequence[str] | None, since: float, until: float, by: str, *,
                      functions: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Sums per `by` ("function", "day" or "tenant") of invocations started and instances
        ended in [since, until), for these tenants (None: all) and functions (None: all)."""
        inv, ins = InvocationUsage, InstanceUsage
        out: dict[str, dict[str, Any]] = {}
        with self.session() as s:
            key = getattr(inv, by)
            query = (aggregate(key, func.count(), func.sum(case((col(inv.outcome) != OK, 1), else_=0)),
                            func.sum(col(inv.billed_ms)), func.sum(col(inv.mib_ms)),
                            func.sum(case((col(inv.init_ms) > 0, 1), else_=0)), func.sum(col(inv.init_ms)),
                            func.sum(col(inv.init_ms) * col(inv.memory_mib)))
                     .where(col(inv.started_at) >= since, col(inv.started_at) < until).group_by(key))
            if tenants is not None:
                query = query.where(col(inv.tenant).in_(list(tenants)))
            if functions is not None:
                query = query.where(col(inv.function).in_(list(functions)))
            for k, n, errors, billed, mib_ms, colds, init, init_mib_ms in s.execute(query).all():
                out[k] = {by: k, "invocations": n, "errors": int(errors or 0), "billed_ms": int(billed or 0),
                          "mib_ms": int(mib_ms or 0), "cold_starts": int(colds or 0),
                          "init_ms": int(init or 0), "init_mib_ms": int(init_mib_ms or 0)}
            key = getattr(ins, by)
            query2 = (aggregate(key, func.count(), func.sum(col(ins.lifetime_ms)), func.sum(col(ins.idle_ms)))
                      .where(col(ins.ended_at) >= since, col(ins.ended_at) < until).group_by(key))
            if tenants is not None:
                query2 = query2.where(col(ins.tenant).in_(list(tenants)))
            if functions is not None:
                query2 = query2.where(col(ins.function).in_(list(functions)))
            for k, n, lifetime, idle in s.execute(query2).all():
                row = out.setdefault(k, {by: k, "invocations": 0, "errors": 0, "billed_ms": 0, "mib_ms": 0,
                                         "cold_starts": 0, "init_ms": 0, "init_mib_ms": 0})
                row.update(instances=n, instance_ms=int(lifetime or 0), idle_ms=int(idle or 0))
        for row in out.values():
            row.setdefault("instances", 0)
            row.setdefault("instance_ms", 0)
            row.setdefault("idle_ms", 0)
        return [out[k] for k in sorted(out)]

    def month_totals(self, tenant: str, month: str, burst_lifetime_ms: int) -> dict[str, int]:
        """A tenant's sums for one month, what a bill is made of: requests, MiB·ms of calls,
        MiB·ms of start-ups (all, and those of short-lived "burst" instances only), idle ms."""
        inv, ins = InvocationUsage, InstanceUsage
        with self.session() as s:
            init_mib_ms_of = func.sum(col(inv.init_ms) * col(inv.memory_mib))
            n, mib_ms, init_mib_ms = s.execute(
                aggregate(func.count(), func.sum(col(inv.mib_ms)), init_mib_ms_of)
                .where(col(inv.tenant) == tenant, col(inv.month) == month)).one()
            burst = s.execute(
                aggregate(init_mib_ms_of)
                .join(ins, col(ins.instance_id) == col(inv.instance_id))
                .where(col(inv.tenant) == tenant, col(inv.month) == month, col(inv.init_ms) > 0,
                       col(ins.lifetime_ms) < burst_lifetime_ms)).scalar()
            idle, instances = s.execute(aggregate(func.sum(col(ins.idle_ms)), func.count())
                                     .where(col(ins.tenant) == tenant, col(ins.month) == month)).one()
        return {"requests": int(n or 0), "mib_ms": int(mib_ms or 0), "init_mib_ms": int(init_mib_ms or 0),
                "burst_init_mib_ms": int(burst or 0), "idle_ms": int(idle or 0),
                "instances": int(instances or 0)}

    # -- budgets -------------------------------------------------------------------------------
    def budgeted_tenants(self) -> list[Tenant]:
        """Tenants with a monthly budget, or marked over one."""
        with self.session() as s:
            return list(s.exec(select(Tenant).where(
                (col(Tenant.budget).is_not(None)) | (col(Tenant.over_budget_month).is_not(None)))).all())

    def add_budget_alert(self, tenant: str, month: str, level: int, spent: float, budget: float) -> bool:
        """Record that a tenant's spending crossed `level` percent of its budget this month; False
        if that was recorded already."""
        with self.session() as s:
            return _insert_new(s, BudgetAlert, [{"tenant": tenant, "month": month, "level": level,
                                                  "spent": spent, "budget": budget, "at": time.time()}]) > 0

    def budget_alerts(self, tenant: str) -> list[BudgetAlert]:
        """A tenant's budget alerts, oldest first."""
        with self.session() as s:
            return list(s.exec(select(BudgetAlert).where(BudgetAlert.tenant == tenant)
                               .order_by(col(BudgetAlert.at))).all())

    def set_over_budget(self, tenant: str, month: str | None) -> bool:
        """Mark a tenant over its budget for `month` (None: no more); True if that changed something
        (every control plane then learns it with its next identity poll)."""
        with self.session() as s:
            row = s.get(Tenant, tenant)
            if row is None or row.over_budget_month == month:
                return False
            row.over_budget_month = month
            s.add(row)
            _bump(s)
            return True


def _insert_new(s: Session, table: Any, rows: list[dict[str, Any]], chunk: int = 500) -> int:
    """INSERT ... ON CONFLICT DO NOTHING (SQLite and PostgreSQL alike), in statements of at most
    `chunk` rows (under both databases' limits on bound parameters); how many were new."""
    insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
    key = next(iter(table.__table__.primary_key.columns))
    # One statement, compiled once and cached, run for many rows (SQLAlchemy batches them into
    # multi-row INSERTs itself, "insertmanyvalues"); the new rows are counted from RETURNING, which
    # names only those inserted (PostgreSQL's driver reports no rowcount for these).
    stmt = insert(table.__table__).on_conflict_do_nothing().returning(key)
    new = 0
    for i in range(0, len(rows), chunk):
        new += len(s.execute(stmt, rows[i:i + chunk]).all())
    return new
