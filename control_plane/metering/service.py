"""Metering: usage records in from nodes, usage and bills out to those who may read them, budgets.

Nodes measure (`node_agent.meter`) and post their records; `ingest` stores them idempotently
(by request id, by instance id) and only then answers, so the node drops them only once they are
committed. `check_budgets` (the leader's loop) prices each budgeted tenant's month so far, records
a `budget_warning` event at 80% and a `budget_exceeded` one at 100% (once per month each), and
throttles the tenant (its calls get 429 `BudgetExceeded`) when its budget action says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from control_plane.core import Clock, Forbidden, InvalidConfig, NotFound, id_prefix
from control_plane.identity import FunctionRef, NodeKeys, Permission, Principal, allowed
from control_plane.metering.prices import Bill, PriceSheet, make_bill
from control_plane.store import Store, instance_row, invocation_row
from node_agent.protocol import UsageBatch

log = logging.getLogger("cumulus.metering")

BUDGET_LEVELS = (80, 100)
GROUPINGS = ("function", "day")


def month_of(ts: float) -> str:
    """`YYYY-MM` of a timestamp, in UTC."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m")


def parse_month(month: str) -> str:
    """A `YYYY-MM` month, checked (InvalidConfig otherwise)."""
    try:
        return dt.datetime.strptime(month, "%Y-%m").strftime("%Y-%m")
    except ValueError:
        raise InvalidConfig(f"month must be YYYY-MM, not {month[:20]!r}") from None


def parse_day(day: str) -> float:
    """The UTC midnight starting `YYYY-MM-DD` (or an ISO date-time), as a timestamp."""
    try:
        when = dt.datetime.fromisoformat(day)
    except ValueError:
        raise InvalidConfig(f"dates must be YYYY-MM-DD (or ISO 8601), not {day[:40]!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


class Metering:
    """Usage in (from nodes) and out (usage tables, bills), and the budgets."""

    def __init__(self, store: Store, keys: NodeKeys | None, prices: PriceSheet,
                 record_event: Callable[[str, str], object], clock: Clock, *,
                 wall: Callable[[], float] | None = None,
                 changed: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.keys = keys
        self.prices = prices
        self.record_event = record_event  # (kind, reason): the fleet's event log
        self.clock = clock
        self.wall = wall or time.time
        self.changed = changed  # the identity caches: a tenant was throttled or let go
        self.rejected = 0

    # -- in ------------------------------------------------------------------------------------
    def ingest(self, node_id: str, batch: UsageBatch) -> int:
        """Store a node's records (the new ones; the others were stored already); returns how many
        were new. Records of instances no control plane placed on that node are dropped."""
        invocations: list[dict[str, Any]] = []
        instances: list[dict[str, Any]] = []
        placed: dict[tuple[str, str], bool] = {}  # (a batch holds many calls of few instances)
        tenants: dict[str, str] = {}
        for rec in batch.records:
            ok = placed.get((rec.instance_id, rec.function))
            if ok is None:
                function, _, _ = rec.instance_id.rpartition("-")
                ok = placed[rec.instance_id, rec.function] = function == id_prefix(rec.function) and (
                    self.keys is None or self.keys.placed_on(rec.instance_id, node_id))
            if not ok:
                self.rejected += 1
                log.warning("event=usage_rejected node=%s instance=%s", node_id, rec.instance_id[:80])
                continue
            tenant = tenants.get(rec.function)
            if tenant is None:
                tenant = tenants[rec.function] = FunctionRef.of_key(rec.function).tenant
            data = vars(rec)  # the fields (read only)
            if rec.kind == "invocation":
                if rec.request_id:
                    invocations.append(invocation_row(tenant, node_id, data))
            else:
                instances.append(instance_row(tenant, node_id, data))
        new = self.store.add_usage(invocations, instances)
        if new < len(invocations) + len(instances):  # a batch sent again (its answer was lost)
            log.info("event=usage_duplicates node=%s received=%d stored=%d duplicates=%d", node_id,
                     len(invocations) + len(instances), new, len(invocations) + len(instances) - new)
        return new

    def ingest_witnessed(self, node_id: str, calls: list[dict[str, Any]]) -> int:
        """Store the calls a control plane answered from a node it forgot (lost, gone, removed)
        whose records the node did not deliver (`gateway.ledger`); those it did are ignored."""
        rows = [invocation_row(FunctionRef.of_key(c["function"]).tenant, node_id, c) for c in calls]
        new = self.store.add_usage(rows, [])
        if new:
            log.warning("event=usage_witnessed node=%s calls=%d stored=%d (its own records were lost "
                        "with it)", node_id, len(rows), new)
        return new

    # -- out -----------------------------------------------------------------------------------
    def _readable(self, user: Principal, tenant: str) -> list[str] | None:
        """The functions of `tenant` whose usage `user` may read (None: all of them); Forbidden if
        none."""
        if allowed(user, Permission.USAGE, FunctionRef(tenant, "*")):
            return None
        keys = [f.name for f, _ in self.store.list_functions(tenant)
                if allowed(user, Permission.USAGE, FunctionRef.of_key(f.name))]
        if not keys:
            raise Forbidden(f"{user.user} lacks permission 'usage' on the functions of tenant {tenant}",
                            missing=Permission.USAGE.value)
        return keys

    def usage(self, user: Principal, tenant: str | None, since: str | None, until: str | None,
              by: str) -> list[dict[str, Any]]:
        """Usage sums per function or per day for `[since, until)` (default: this month so far)."""
        if by not in GROUPINGS:
            raise InvalidConfig(f"by must be one of {', '.join(GROUPINGS)}, not {by[:20]!r}")
        tenant = tenant or user.tenant
        self._tenant(tenant)
        functions = self._readable(user, tenant)
        now = self.wall()
        start = parse_day(since) if since else parse_day(month_of(now) + "-01")
        end = parse_day(until) if until else now + 1
        rows = self.store.usage_summary([tenant], start, end, by, functions=functions)
        return [_public(row, by) for row in rows]

    def bill(self, user: Principal, tenant: str | None, month: str | None) -> Bill:
        """A tenant's bill for a month (default: this one, so far)."""
        tenant = tenant or user.tenant
        self._tenant(tenant)
        if not allowed(user, Permission.USAGE, FunctionRef(tenant, "*")):
            raise Forbidden(f"{user.user} lacks permission 'usage' on every function of tenant {tenant}, "
                            "which a bill needs", missing=Permission.USAGE.value)
        return self.price(tenant, parse_month(month) if month else month_of(self.wall()))

    def price(self, tenant: str, month: str) -> Bill:
        """The bill of `tenant` for `month` (no authorization: for the budget loop)."""
        totals = self.store.month_totals(tenant, month, int(self.prices.burst_lifetime_s * 1000))
        return make_bill(tenant, month, totals, self.prices)

    def _tenant(self, name: str) -> None:
        try:
            self.store.tenant(name)
        except NotFound:
            raise Forbidden(f"no access to tenant {name[:63]}") from None

    # -- budgets -------------------------------------------------------------------------------
    def check_budgets(self) -> None:
        """Price every budgeted tenant's month so far: alerts at 80% and 100%; at 100% the tenant is
        marked over its budget (its calls refused if its budget action is "throttle", no growth of the
        fleet for it either way), and let go when the month or the budget changed."""
        month = month_of(self.wall())
        for tenant in self.store.budgeted_tenants():
            spent = self.price(tenant.name, month).total if tenant.budget is not None else Decimal(0)
            budget = Decimal(str(tenant.budget)) if tenant.budget is not None else None
            for level in BUDGET_LEVELS:
                if budget is not None and spent * 100 >= budget * level and \
                        self.store.add_budget_alert(tenant.name, month, level, float(spent), float(budget)):
                    kind = "budget_exceeded" if level >= 100 else "budget_warning"
                    self.record_event(kind, f"tenant {tenant.name} spent {spent} {self.prices.currency} "
                                             f"of its {budget} budget for {month} ({level}%)")
            over = budget is not None and spent >= budget
            if self.store.set_over_budget(tenant.name, month if over else None):
                self.changed()
                throttle = tenant.budget_action == "throttle"
                kind, what = (("budget_throttled", "calls refused") if over and throttle else
                              ("budget_over", "calls still served (warn), the fleet grows no more for it")
                              if over else ("budget_released", "calls accepted again"))
                self.record_event(kind, f"tenant {tenant.name}: {what} ({spent} of {budget} "
                                        f"{self.prices.currency} in {month})")

    async def watch_budgets(self, stop: asyncio.Event, interval_s: float,
                            leading: Callable[[], bool]) -> None:
        """`check_budgets` every `interval_s` while this control plane leads."""
        while not stop.is_set():
            if leading():
                try:
                    await asyncio.to_thread(self.check_budgets)
                except Exception as exc:  # the database is away: next time
                    log.warning("event=budget_check_failed error=%r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


def _public(row: dict[str, Any], by: str) -> dict[str, Any]:
    """A usage row as the API shows it (GB·s exact, as a decimal string)."""
    return {by: row[by], "invocations": row["invocations"], "errors": row["errors"],
            "billed_ms": row["billed_ms"], "gb_s": format(Decimal(row["mib_ms"]) / Decimal(1_024_000), "f"),
            "cold_starts": row["cold_starts"], "init_ms": row["init_ms"], "instances": row["instances"],
            "instance_s": row["instance_ms"] / 1000, "idle_s": row["idle_ms"] / 1000}
