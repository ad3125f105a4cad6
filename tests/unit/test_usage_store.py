"""The usage repository (`control_plane.store.usage`) on SQLite and on a real PostgreSQL server:
records stored once whoever sends them how often (batches over the insert chunk included), the
usage summaries and month totals equal to sums worked out from the rows themselves, budget alerts
once per level, and the over-budget mark."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from control_plane.store import Store, instance_row, invocation_row
from node_agent.protocol import UsageRecord

MAY_10 = dt.datetime(2024, 5, 10, tzinfo=dt.UTC).timestamp()
DAY = 86_400.0
NODE = "node-a"
TENANTS = ("acme", "globex")
FUNCTIONS = {"acme": ("acme/alpha", "acme/beta"), "globex": ("globex/gamma",)}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        url = str(request.getfixturevalue("postgres_db"))
    store = Store(url)
    for tenant in TENANTS:
        store.create_tenant(tenant, {}, 100.0, "throttle")
    return store


# -- records, as a node sends them, and the rows made of them -------------------------------------------
def call(request_id: str, *, function: str = "acme/alpha", instance_id: str = "inst-1",
         started_at: float = MAY_10 + 3600, duration_us: int = 1500, memory_mib: int = 256,
         init_ms: float = 0.0, outcome: str = "ok") -> dict[str, Any]:
    """An invocation record (shaped, and checked, as `UsageRecord`)."""
    return UsageRecord(seq=0, kind="invocation", request_id=request_id, function=function, version=1,
                       instance_id=instance_id, memory_mib=memory_mib, started_at=started_at,
                       duration_us=duration_us, init_ms=init_ms, outcome=outcome).model_dump()


def stopped(instance_id: str, *, function: str = "acme/alpha", started_at: float = MAY_10,
            lifetime_s: float = 600.0, busy_ms: float = 1000.0, memory_mib: int = 256,
            init_ms: float = 100.0) -> dict[str, Any]:
    """An instance record."""
    return UsageRecord(seq=0, kind="instance", instance_id=instance_id, function=function, version=1,
                       memory_mib=memory_mib, started_at=started_at, ended_at=started_at + lifetime_s,
                       busy_ms=busy_ms, init_ms=init_ms).model_dump()


def tenant_of(function: str) -> str:
    return function.split("/")[0]


def inv_rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [invocation_row(tenant_of(r["function"]), NODE, r) for r in records]


def ins_rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [instance_row(tenant_of(r["function"]), NODE, r) for r in records]


def usage_world(seed: int = 7) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Invocation and instance rows of two tenants over three days of May (and a few in April and
    June): cold and warm calls, errors, short- and long-lived instances."""
    rng = random.Random(seed)
    invocations: list[dict[str, Any]] = []
    instances: list[dict[str, Any]] = []
    starts = [MAY_10 - 11 * DAY, *(MAY_10 + d * DAY for d in range(3)), MAY_10 + 22 * DAY]
    for n in range(60):
        function = rng.choice([f for fs in FUNCTIONS.values() for f in fs])
        instance_id = f"inst-{n}"
        born = rng.choice(starts) + rng.uniform(0, DAY - 7200)
        # some instances live under a minute (the burst threshold of these tests), one exactly a minute
        lifetime = 60.0 if n == 0 else rng.choice([rng.uniform(1, 59), rng.uniform(61, 7000)])
        memory = rng.choice([128, 256, 1024])
        for k in range(rng.randint(0, 6)):
            invocations.append(call(
                f"req-{n}-{k}", function=function, instance_id=instance_id,
                started_at=born + k * lifetime / 7, duration_us=rng.randint(0, 3_000_000),
                memory_mib=memory, init_ms=rng.uniform(50, 900) if k == 0 else 0.0,
                outcome=rng.choice(["ok", "ok", "ok", "Unhandled", "FunctionTimeout"])))
        if n % 5 != 4:  # the others are still running: no instance record yet
            instances.append(stopped(instance_id, function=function, started_at=born, lifetime_s=lifetime,
                                     busy_ms=rng.uniform(0, lifetime * 1000), memory_mib=memory,
                                     init_ms=rng.uniform(50, 900)))
    # the bounds of summaries are [since, until): records right on them
    invocations.append(call("req-at-since", function="acme/alpha", started_at=MAY_10 + DAY))
    invocations.append(call("req-at-until", function="acme/alpha", started_at=MAY_10 + 2 * DAY))
    instances.append(stopped("inst-at-until", function="acme/beta", started_at=MAY_10 + DAY, lifetime_s=DAY))
    return inv_rows(invocations), ins_rows(instances)


# -- sums worked out from the rows, by hand ---------------------------------------------------------------
def expected_summary(invocations: Sequence[dict[str, Any]], instances: Sequence[dict[str, Any]],
                     tenants: Sequence[str] | None, since: float, until: float, by: str,
                     functions: Sequence[str] | None = None) -> list[dict[str, Any]]:
    def wanted(row: dict[str, Any], at: float) -> bool:
        return since <= at < until and (tenants is None or row["tenant"] in tenants) and \
            (functions is None or row["function"] in functions)

    out: dict[str, dict[str, Any]] = {}

    def row_of(key: str) -> dict[str, Any]:
        return out.setdefault(key, {by: key, "invocations": 0, "errors": 0, "billed_ms": 0, "mib_ms": 0,
                                    "cold_starts": 0, "init_ms": 0, "init_mib_ms": 0, "instances": 0,
                                    "instance_ms": 0, "idle_ms": 0})

    for r in invocations:
        if wanted(r, r["started_at"]):
            row = row_of(r[by])
            row["invocations"] += 1
            row["errors"] += r["outcome"] != "ok"
            row["billed_ms"] += r["billed_ms"]
            row["mib_ms"] += r["mib_ms"]
            row["cold_starts"] += r["init_ms"] > 0
            row["init_ms"] += r["init_ms"]
            row["init_mib_ms"] += r["init_ms"] * r["memory_mib"]
    for r in instances:
        if wanted(r, r["ended_at"]):
            row = row_of(r[by])
            row["instances"] += 1
            row["instance_ms"] += r["lifetime_ms"]
            row["idle_ms"] += r["idle_ms"]
    return [out[k] for k in sorted(out)]


def expected_month_totals(invocations: Sequence[dict[str, Any]], instances: Sequence[dict[str, Any]],
                          tenant: str, month: str, burst_lifetime_ms: int) -> dict[str, int]:
    calls = [r for r in invocations if r["tenant"] == tenant and r["month"] == month]
    lifetimes = {r["instance_id"]: r["lifetime_ms"] for r in instances}  # whatever month it ended in
    ended = [r for r in instances if r["tenant"] == tenant and r["month"] == month]
    return {"requests": len(calls), "mib_ms": sum(r["mib_ms"] for r in calls),
            "init_mib_ms": sum(r["init_ms"] * r["memory_mib"] for r in calls),
            "burst_init_mib_ms": sum(r["init_ms"] * r["memory_mib"] for r in calls
                                     if r["init_ms"] > 0 and r["instance_id"] in lifetimes
                                     and lifetimes[r["instance_id"]] < burst_lifetime_ms),
            "idle_ms": sum(r["idle_ms"] for r in ended), "instances": len(ended)}


# -- storing, idempotently --------------------------------------------------------------------------------
def _keys(store: Store) -> tuple[set[str], set[str]]:
    return {r.request_id for r in store.usage_rows()}, {r.instance_id for r in store.instance_rows()}


def test_adding_the_same_records_twice_stores_them_once(store: Store) -> None:
    invocations = inv_rows([call("req-1", init_ms=120.4), call("req-2"), call("req-3", outcome="Unhandled")])
    instances = ins_rows([stopped("inst-1"), stopped("inst-2")])
    assert store.add_usage(invocations, instances) == 5
    stored = _keys(store)
    assert stored == ({"req-1", "req-2", "req-3"}, {"inst-1", "inst-2"})
    assert store.add_usage(invocations, instances) == 0  # the node's answer was lost: sent again
    assert _keys(store) == stored
    # one new call, one stored already, the new one twice in the batch: one new row
    assert store.add_usage(inv_rows([call("req-4"), call("req-1"), call("req-4")]), []) == 1
    assert store.add_usage([], []) == 0
    assert len(store.usage_rows()) == 4


def test_the_first_record_stored_wins(store: Store) -> None:
    store.add_usage(inv_rows([call("req-1", duration_us=2_000_001)]), [])
    assert store.add_usage(inv_rows([call("req-1", duration_us=5)]), []) == 0
    [row] = store.usage_rows()
    assert (row.duration_us, row.billed_ms, row.mib_ms) == (2_000_001, 2001, 2001 * 256)


def test_batches_over_the_insert_chunk_with_duplicates_inside_and_across(store: Store) -> None:
    first_calls = [call(f"req-{i}", started_at=MAY_10 + i) for i in range(1200)]
    first_stops = [stopped(f"inst-{i}", started_at=MAY_10 + i) for i in range(700)]
    # every 10th record twice in the same batch
    assert store.add_usage(inv_rows(first_calls + first_calls[::10]),
                           ins_rows(first_stops + first_stops[::10])) == 1200 + 700
    # half of them again, with as many new ones, and duplicates of both inside the batch
    second_calls = first_calls[600:] + [call(f"req-{i}", started_at=MAY_10 + i) for i in range(1200, 1800)]
    second_stops = first_stops[350:] + [stopped(f"inst-{i}", started_at=MAY_10 + i) for i in range(700, 1050)]
    assert store.add_usage(inv_rows(second_calls + second_calls[::7]),
                           ins_rows(second_stops + second_stops[::7])) == 600 + 350
    assert sorted(r.request_id for r in store.usage_rows()) == sorted(f"req-{i}" for i in range(1800))
    assert sorted(r.instance_id for r in store.instance_rows()) == sorted(f"inst-{i}" for i in range(1050))
    assert store.add_usage(inv_rows(first_calls + second_calls), ins_rows(first_stops + second_stops)) == 0


# -- sums -------------------------------------------------------------------------------------------------
def test_the_rows_read_back_are_the_rows_stored(store: Store) -> None:
    invocations, instances = usage_world()
    store.add_usage(invocations, instances)
    got = sorted((r.model_dump(exclude={"recorded_at"}) for r in store.usage_rows()),
                 key=lambda d: d["request_id"])
    assert got == sorted(invocations, key=lambda d: d["request_id"])
    got = sorted((r.model_dump(exclude={"recorded_at"}) for r in store.instance_rows()),
                 key=lambda d: d["instance_id"])
    assert got == sorted(instances, key=lambda d: d["instance_id"])
    may = store.usage_rows("acme", "2024-05")
    assert may and all(r.tenant == "acme" and r.month == "2024-05" for r in may)
    assert [r.started_at for r in may] == sorted(r.started_at for r in may)  # oldest first


@pytest.mark.parametrize(("by", "tenants", "since", "until", "functions"), [
    ("function", ["acme"], MAY_10 + DAY, MAY_10 + 2 * DAY, None),  # one day, by its exact bounds
    ("function", ["acme"], MAY_10 + 5000, MAY_10 + 2 * DAY + 40_000, None),  # bounds inside days
    ("function", None, 0, MAY_10 + 30 * DAY, None),  # everything
    ("function", None, MAY_10, MAY_10 + 3 * DAY, ["acme/beta", "globex/gamma"]),
    ("function", ["acme"], MAY_10, MAY_10 + 3 * DAY, ["globex/gamma"]),  # not this tenant's: nothing
    ("day", ["acme", "globex"], MAY_10 - 20 * DAY, MAY_10 + 2 * DAY, None),
    ("day", ["acme"], MAY_10 + 7000, MAY_10 + 3 * DAY, ["acme/alpha"]),
    ("tenant", None, MAY_10, MAY_10 + 3 * DAY, None),
    ("function", ["nobody"], 0, MAY_10 + 30 * DAY, None),
], ids=["one-day", "inside-days", "all", "some-functions", "other-tenants-functions", "by-day",
        "by-day-one-function", "by-tenant", "unknown-tenant"])
def test_usage_summary_is_the_sum_of_the_rows(store: Store, by: str, tenants: list[str] | None, since: float,
                                              until: float, functions: list[str] | None) -> None:
    invocations, instances = usage_world()
    store.add_usage(invocations, instances)
    got = store.usage_summary(tenants, since, until, by, functions=functions)
    assert got == expected_summary(invocations, instances, tenants, since, until, by, functions)
    if by == "function" and tenants == ["acme"] and functions is None:
        assert got  # (the case is not vacuous)


def test_usage_summary_counts_the_records_on_its_bounds_once(store: Store) -> None:
    invocations, instances = usage_world()
    store.add_usage(invocations, instances)
    day = store.usage_summary(["acme"], MAY_10 + DAY, MAY_10 + 2 * DAY, "day")
    days = {row["day"]: row for row in day}
    assert set(days) <= {"2024-05-11"}  # [since, until): the record at `until` is the next day's
    next_day = store.usage_summary(["acme"], MAY_10 + 2 * DAY, MAY_10 + 3 * DAY, "day")
    both = store.usage_summary(["acme"], MAY_10 + DAY, MAY_10 + 3 * DAY, "day")
    assert both == sorted(day + next_day, key=lambda r: r["day"])


@pytest.mark.parametrize(("tenant", "month"), [("acme", "2024-05"), ("globex", "2024-05"),
                                               ("acme", "2024-04"), ("acme", "2024-06"), ("acme", "2023-01")])
def test_month_totals_are_the_sums_of_the_rows(store: Store, tenant: str, month: str) -> None:
    invocations, instances = usage_world()
    store.add_usage(invocations, instances)
    got = store.month_totals(tenant, month, burst_lifetime_ms=60_000)
    assert got == expected_month_totals(invocations, instances, tenant, month, 60_000)
    if (tenant, month) == ("acme", "2024-05"):  # (the world makes every figure count)
        assert all(got.values()) and got["burst_init_mib_ms"] < got["init_mib_ms"]


def test_burst_start_ups_are_those_of_instances_that_lived_under_the_threshold(store: Store) -> None:
    calls = [call("req-short", instance_id="short", init_ms=100.2, memory_mib=512),
             call("req-short-warm", instance_id="short", memory_mib=512),
             call("req-exact", instance_id="exact", init_ms=200, memory_mib=128),
             call("req-long", instance_id="long", init_ms=300, memory_mib=128),
             call("req-running", instance_id="running", init_ms=400, memory_mib=128)]
    stops = [stopped("short", lifetime_s=59.5, busy_ms=500), stopped("exact", lifetime_s=60.0),
             stopped("long", lifetime_s=3600, busy_ms=10_000)]
    invocations, instances = inv_rows(calls), ins_rows(stops)
    store.add_usage(invocations, instances)
    totals = store.month_totals("acme", "2024-05", burst_lifetime_ms=60_000)
    assert totals["burst_init_mib_ms"] == 101 * 512  # only "short": under the threshold, not at it
    assert totals["init_mib_ms"] == 101 * 512 + (200 + 300 + 400) * 128
    assert totals["idle_ms"] == (59_500 - 500) + (60_000 - 1000) + (3_600_000 - 10_000)
    assert totals == expected_month_totals(invocations, instances, "acme", "2024-05", 60_000)


@pytest.mark.parametrize(("lifetime_s", "lifetime_ms"), [(2.7, 2700), (59.999, 59_999), (0.3, 300),
                                                       (300.0004, 300_001)])
def test_an_instances_lifetime_gains_no_millisecond_from_its_float_timestamps(
        store: Store, lifetime_s: float, lifetime_ms: int) -> None:
    # A node's timestamps are epoch seconds: their difference is off by up to ~2.4e-7 s (a float's
    # last bit at 1.7e9), which must not round up to a whole extra millisecond of keep-alive.
    [row] = ins_rows([stopped("inst-1", lifetime_s=lifetime_s, busy_ms=0)])
    assert (row["lifetime_ms"], row["idle_ms"]) == (lifetime_ms, lifetime_ms)
    store.add_usage([], [row])
    assert store.month_totals("acme", "2024-05", 60_000)["idle_ms"] == lifetime_ms


def test_month_totals_of_nothing_are_zeros(store: Store) -> None:
    assert store.month_totals("acme", "2024-05", 60_000) == {
        "requests": 0, "mib_ms": 0, "init_mib_ms": 0, "burst_init_mib_ms": 0, "idle_ms": 0, "instances": 0}


# -- budgets ----------------------------------------------------------------------------------------------
def test_a_budget_alert_is_recorded_once_per_tenant_month_and_level(store: Store) -> None:
    assert store.add_budget_alert("acme", "2024-05", 80, 81.5, 100.0) is True
    assert store.add_budget_alert("acme", "2024-05", 80, 95.0, 100.0) is False  # crossed again
    assert store.add_budget_alert("acme", "2024-05", 100, 101.0, 100.0) is True
    assert store.add_budget_alert("acme", "2024-06", 80, 80.0, 100.0) is True
    assert store.add_budget_alert("globex", "2024-05", 80, 8.0, 10.0) is True
    assert store.add_budget_alert("acme", "2024-05", 100, 150.0, 100.0) is False
    alerts = store.budget_alerts("acme")
    assert [(a.month, a.level, a.spent) for a in alerts] == [("2024-05", 80, 81.5), ("2024-05", 100, 101.0),
                                                             ("2024-06", 80, 80.0)]
    assert [(a.month, a.level) for a in store.budget_alerts("globex")] == [("2024-05", 80)]
    assert store.budget_alerts("nobody") == []


def test_set_over_budget_reports_a_change_and_bumps_the_identity_generation(store: Store) -> None:
    generation = store.identity_generation()
    assert store.set_over_budget("acme", "2024-05") is True
    assert store.identity_generation() == generation + 1
    assert store.set_over_budget("acme", "2024-05") is False  # already so: nothing to tell anyone
    assert store.identity_generation() == generation + 1
    assert store.set_over_budget("acme", "2024-06") is True
    assert store.set_over_budget("acme", None) is True
    assert store.set_over_budget("acme", None) is False
    assert store.set_over_budget("nobody", "2024-05") is False
    assert store.identity_generation() == generation + 3
    over = {t.name: t.over_budget_month for t in store.budgeted_tenants()}
    assert over == {"acme": None, "globex": None}
    store.set_over_budget("globex", "2024-05")
    assert {t.name: t.over_budget_month for t in store.budgeted_tenants()}["globex"] == "2024-05"
