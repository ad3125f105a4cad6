"""Billing: the price sheet from config, `make_bill`'s lines under each cold-start policy (exact
`Decimal`s, the total the sum of the lines to the last digit, for any usage), and `Metering` end to
end on a real SQLite store: ingest from a node (only instances placed on it, idempotent), bills that
reconcile with the stored rows, who may read usage and bills, and the budget loop's alerts,
throttling and release, at a fixed wall-clock month."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_plane.core import Forbidden, InvalidConfig, ManualClock
from control_plane.identity import Grant, NodeKeys, Permission, Principal, Role
from control_plane.metering import Bill, BillLine, ColdStartPolicy, Metering, PriceSheet, make_bill
from control_plane.store import Store
from node_agent.protocol import UsageBatch, UsageRecord

NOW = dt.datetime(2024, 5, 15, 12, 0, tzinfo=dt.UTC).timestamp()
MONTH = "2024-05"
APRIL = dt.datetime(2024, 4, 20, 8, 0, tzinfo=dt.UTC).timestamp()
JUNE = dt.datetime(2024, 6, 2, 9, 0, tzinfo=dt.UTC).timestamp()
SEED = b"a fixed cluster seed for the tests"
MICRO = Decimal("0.000001")
# Prices that make every line count (the defaults give amounts of a millionth).
PRICES = {"currency": "EUR", "per_gb_second": "0.5", "per_million_requests": "1000",
          "per_keepalive_instance_hour": "0.1"}


def _totals(**sums: int) -> dict[str, int]:
    base = {"requests": 0, "mib_ms": 0, "init_mib_ms": 0, "burst_init_mib_ms": 0, "idle_ms": 0,
            "instances": 0}
    return base | sums


def _lines(bill: Bill) -> dict[str, BillLine]:
    """The bill's lines by item, the start-up line under its plain name."""
    return {line.item.split(" (")[0]: line for line in bill.lines}


# -- the price sheet --------------------------------------------------------------------------------------
def test_a_price_sheet_from_config_keeps_the_numbers_as_written() -> None:
    sheet = PriceSheet.from_config({"currency": "EUR", "per_gb_second": 0.0000166667,
                                    "per_million_requests": 0.2, "per_keepalive_instance_hour": 0.05,
                                    "cold_start": "burst", "burst_lifetime_s": 30})
    # (a TOML float goes through its shortest repr, not through binary: 0.2, not 0.2000000000000000111)
    assert sheet.per_gb_second == Decimal("0.0000166667")
    assert str(sheet.per_million_requests) == "0.2"
    assert sheet.per_keepalive_instance_hour == Decimal("0.05")
    assert (sheet.currency, sheet.cold_start, sheet.burst_lifetime_s) == ("EUR", "burst", 30.0)


def test_an_empty_billing_table_is_the_default_sheet() -> None:
    sheet = PriceSheet.from_config({})
    assert sheet == PriceSheet()
    assert (sheet.cold_start, sheet.currency, sheet.burst_lifetime_s) == ("invocation", "USD", 60.0)


@pytest.mark.parametrize(("table", "names", "says"), [
    ({"per_gb_second": -0.1}, "per_gb_second", "greater than or equal to 0"),
    ({"per_million_requests": "-1"}, "per_million_requests", "greater than or equal to 0"),
    ({"per_keepalive_instance_hour": -5}, "per_keepalive_instance_hour", "greater than or equal to 0"),
    ({"cold_start": "free"}, "cold_start", "'invocation', 'platform' or 'burst'"),
    ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
    ({"per_gb_second": "cheap"}, "per_gb_second", "valid decimal"),
    ({"per_gb_second": float("nan")}, "per_gb_second", "finite number"),
    ({"per_gb_second": True}, "per_gb_second", "Decimal input should be"),
    ({"burst_lifetime_s": 0}, "burst_lifetime_s", "greater than 0"),
    ({"burst_lifetime_s": "soon"}, "burst_lifetime_s", "valid number"),
])
def test_a_bad_billing_table_is_refused_naming_the_key(table: dict[str, Any], names: str, says: str) -> None:
    with pytest.raises(ValueError) as refused:
        PriceSheet.from_config(table)
    message = str(refused.value)
    assert names in message and says in message


# -- make_bill --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("policy", "item", "startup_gb_s"), [
    ("invocation", "start-up (invocation)", Decimal(1)),
    ("platform", "start-up (platform)", Decimal(0)),
    ("burst", "start-up (burst)", Decimal("0.5")),
])
def test_the_lines_of_a_bill(policy: str, item: str, startup_gb_s: Decimal) -> None:
    sheet = PriceSheet.from_config({**PRICES, "cold_start": policy})
    totals = _totals(requests=3, mib_ms=2_048_000, init_mib_ms=1_024_000, burst_init_mib_ms=512_000,
                     idle_ms=1_800_000, instances=2)
    bill = make_bill("acme", MONTH, totals, sheet)
    assert (bill.tenant, bill.month, bill.currency, bill.cold_start_policy) == ("acme", MONTH, "EUR", policy)
    assert [line.item for line in bill.lines] == ["requests", "compute", item, "keep-alive"]
    lines = _lines(bill)
    # requests x per_million / 10^6
    assert (lines["requests"].quantity, lines["requests"].unit) == (Decimal(3), "requests")
    assert lines["requests"].unit_price == Decimal("0.001")
    assert lines["requests"].amount == Decimal("0.003")
    # GB·s = MiB·ms / 1024 / 1000: the calls' own time only, their start-ups are a line of their own
    assert (lines["compute"].quantity, lines["compute"].unit) == (Decimal(2), "GB-s")
    assert lines["compute"].amount == Decimal("1")
    assert (lines["start-up"].quantity, lines["start-up"].unit) == (startup_gb_s, "GB-s")
    assert lines["start-up"].unit_price == sheet.per_gb_second
    assert lines["start-up"].amount == startup_gb_s * Decimal("0.5")
    # idle instance-hours x price
    assert (lines["keep-alive"].quantity, lines["keep-alive"].unit) == (Decimal("0.5"), "instance-hours")
    assert lines["keep-alive"].amount == Decimal("0.05")
    assert bill.total == Decimal("1.053") + startup_gb_s * Decimal("0.5")


def test_start_ups_never_change_the_compute_line() -> None:
    sheet = PriceSheet.from_config(PRICES)
    warm = make_bill("acme", MONTH, _totals(requests=1, mib_ms=1_024_000), sheet)
    cold = make_bill("acme", MONTH, _totals(requests=1, mib_ms=1_024_000, init_mib_ms=4_096_000,
                                           burst_init_mib_ms=4_096_000), sheet)
    assert _lines(warm)["compute"] == _lines(cold)["compute"]
    assert cold.total - warm.total == Decimal(2)  # 4 GB·s of start-up at 0.5


def test_amounts_are_rounded_once_half_even_to_a_millionth() -> None:
    sheet = PriceSheet.from_config({"per_million_requests": "0.1", "per_keepalive_instance_hour": "1"})
    half_down = make_bill("acme", MONTH, _totals(requests=5), sheet)  # 0.0000005 → 0.000000
    half_up = make_bill("acme", MONTH, _totals(requests=15), sheet)  # 0.0000015 → 0.000002
    assert _lines(half_down)["requests"].amount == Decimal("0.000000")
    assert _lines(half_up)["requests"].amount == Decimal("0.000002")
    for line in half_up.lines:
        assert line.amount.as_tuple().exponent == -6
    # one idle millisecond: 1 / 3,600,000 h, to 9 places
    one_ms = make_bill("acme", MONTH, _totals(idle_ms=1), sheet)
    assert _lines(one_ms)["keep-alive"].quantity == Decimal("0.000000278")
    assert _lines(one_ms)["keep-alive"].amount == Decimal("0.000000")


def test_a_bill_in_json_writes_decimals_in_plain_notation() -> None:
    bill = make_bill("acme", MONTH, _totals(requests=1), PriceSheet())
    data = bill.model_dump(mode="json")
    assert data["lines"][0]["unit_price"] == "0.0000002"  # never "2E-7"
    assert data["total"] == "0.000000"
    assert Bill.model_validate(data) == bill


_COUNTS = st.integers(min_value=0, max_value=10**13)
_PRICES = st.decimals(min_value=0, max_value=1000, places=10, allow_nan=False, allow_infinity=False)


@given(requests=_COUNTS, mib_ms=_COUNTS, init_mib_ms=_COUNTS, burst_share=st.fractions(0, 1),
       idle_ms=_COUNTS, per_gb_second=_PRICES, per_million=_PRICES, per_hour=_PRICES,
       policy=st.sampled_from(["invocation", "platform", "burst"]))
def test_the_total_is_the_sum_of_the_lines_for_any_usage(
        requests: int, mib_ms: int, init_mib_ms: int, burst_share: Any, idle_ms: int,
        per_gb_second: Decimal, per_million: Decimal, per_hour: Decimal, policy: ColdStartPolicy) -> None:
    sheet = PriceSheet(per_gb_second=per_gb_second, per_million_requests=per_million,
                       per_keepalive_instance_hour=per_hour, cold_start=policy)
    burst = int(init_mib_ms * burst_share)
    bill = make_bill("acme", MONTH, _totals(requests=requests, mib_ms=mib_ms, init_mib_ms=init_mib_ms,
                                            burst_init_mib_ms=burst, idle_ms=idle_ms), sheet)
    assert bill.total == sum((line.amount for line in bill.lines), Decimal(0))
    for line in bill.lines:
        assert line.amount == (line.quantity * line.unit_price).quantize(MICRO, rounding=ROUND_HALF_EVEN)
    lines = _lines(bill)
    assert lines["requests"].quantity == requests
    assert lines["compute"].quantity * 1_024_000 == mib_ms  # GB·s end: exact
    startup = {"invocation": init_mib_ms, "platform": 0, "burst": burst}[policy]
    assert lines["start-up"].quantity * 1_024_000 == startup
    hours = lines["keep-alive"].quantity
    assert abs(hours * 3_600_000 - idle_ms) <= Decimal("0.0000000005") * 3_600_000
    # never further from the exact price than the roundings (four lines, and the hours' 9 places)
    exact = (requests * per_million / 1_000_000 + Decimal(mib_ms + startup) / 1_024_000 * per_gb_second
             + Decimal(idle_ms) / 3_600_000 * per_hour)
    assert abs(bill.total - exact) <= 4 * MICRO / 2 + Decimal("0.0000000005") * per_hour


# -- Metering on a real store -----------------------------------------------------------------------------
@dataclass
class Wall:
    """The wall clock the month is read from, moved by hand."""

    t: float = NOW

    def __call__(self) -> float:
        return self.t


@dataclass
class World:
    """A store, the node keys, and what Metering told the rest of the control plane."""

    store: Store
    keys: NodeKeys
    wall: Wall = field(default_factory=Wall)
    events: list[tuple[str, str]] = field(default_factory=list)
    changes: int = 0

    def metering(self, **prices: Any) -> Metering:
        def changed() -> None:
            self.changes += 1

        return Metering(self.store, self.keys, PriceSheet.from_config({**PRICES, **prices}),
                        lambda kind, reason: self.events.append((kind, reason)), ManualClock(),
                        wall=self.wall, changed=changed)

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


@pytest.fixture
def world(tmp_path: Path) -> World:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_tenant("acme", {}, None, "throttle")
    store.create_tenant("globex", {}, None, "throttle")
    for name in ("acme/alpha", "acme/img-resize", "globex/gamma"):
        store.add_version(name, {}, "digest", 0, tenant=name.split("/")[0])
    return World(store, NodeKeys(SEED))


_request_ids = (f"req-{n:06d}" for n in itertools.count())


def call(instance_id: str, function: str, *, started_at: float = NOW - 3600, duration_us: int = 1500,
         memory_mib: int = 256, init_ms: float = 0.0, outcome: str = "ok",
         request_id: str | None = None) -> UsageRecord:
    """An invocation record, as a node's meter makes it."""
    return UsageRecord(seq=0, kind="invocation", instance_id=instance_id, function=function, version=1,
                       memory_mib=memory_mib, started_at=started_at, init_ms=init_ms,
                       request_id=request_id or next(_request_ids), duration_us=duration_us, outcome=outcome)


def stopped(instance_id: str, function: str, *, started_at: float, lifetime_s: float, busy_ms: float,
            memory_mib: int = 256, init_ms: float = 0.0) -> UsageRecord:
    """The record of an instance that stopped."""
    return UsageRecord(seq=0, kind="instance", instance_id=instance_id, function=function, version=1,
                       memory_mib=memory_mib, started_at=started_at, ended_at=started_at + lifetime_s,
                       busy_ms=busy_ms, init_ms=init_ms)


def batch(node_id: str, records: Iterable[UsageRecord]) -> UsageBatch:
    """What a node posts: the records, numbered."""
    return UsageBatch(node_id=node_id,
                      records=[r.model_copy(update={"seq": i}) for i, r in enumerate(records)])


def _stored(store: Store) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every stored row, as plain data (without the time it was recorded)."""
    def plain(rows: Iterable[Any]) -> list[dict[str, Any]]:
        return sorted((r.model_dump(exclude={"recorded_at"}) for r in rows), key=lambda d: sorted(d.items()))

    return plain(store.usage_rows()), plain(store.instance_rows())


def test_ingest_stores_the_records_of_instances_placed_on_the_node(world: World) -> None:
    metering = world.metering()
    mine = world.keys.instance_id("acme/alpha", "node-a")
    dashed = world.keys.instance_id("acme/img-resize", "node-a")
    elsewhere = world.keys.instance_id("acme/alpha", "node-b")  # placed on another node
    forged = mine[:-1] + ("0" if mine[-1] != "0" else "1")  # not minted by this cluster
    other_function = world.keys.instance_id("acme/img-resize", "node-a")  # reported as acme/alpha
    foreign_keys = NodeKeys(b"another cluster").instance_id("acme/alpha", "node-a")
    records = [call(mine, "acme/alpha", init_ms=120.4, duration_us=2_000_001),
               call(mine, "acme/alpha"),
               call(dashed, "acme/img-resize", memory_mib=1024),
               stopped(mine, "acme/alpha", started_at=NOW - 3700, lifetime_s=300.0004, busy_ms=5000),
               call(elsewhere, "acme/alpha"), stopped(elsewhere, "acme/alpha", started_at=NOW - 10,
                                                      lifetime_s=5, busy_ms=1),
               call(forged, "acme/alpha"), call(other_function, "acme/alpha"),
               call(foreign_keys, "acme/alpha"), call("not-an-instance-id", "acme/alpha")]
    assert metering.ingest("node-a", batch("node-a", records)) == 4
    assert metering.rejected == 6
    invocations, instances = world.store.usage_rows(), world.store.instance_rows()
    assert {r.instance_id for r in invocations} == {mine, dashed}
    assert [r.instance_id for r in instances] == [mine]
    assert {r.tenant for r in invocations} | {r.tenant for r in instances} == {"acme"}
    assert {r.node_id for r in invocations} == {"node-a"}
    first = next(r for r in invocations if r.init_ms)
    # billed by the millisecond rounded up; start-ups too
    assert (first.billed_ms, first.mib_ms, first.init_ms, first.month) == (2001, 2001 * 256, 121, MONTH)
    assert (instances[0].lifetime_ms, instances[0].busy_ms, instances[0].idle_ms) == (300_001, 5000, 295_001)
    # the same instances, honestly reported by the node they were placed on, are accepted
    assert metering.ingest("node-b", batch("node-b", [call(elsewhere, "acme/alpha")])) == 1


def test_ingesting_a_batch_again_changes_nothing(world: World) -> None:
    metering = world.metering()
    inst = world.keys.instance_id("acme/alpha", "node-a")
    sent = batch("node-a", [call(inst, "acme/alpha", init_ms=800), call(inst, "acme/alpha"),
                            stopped(inst, "acme/alpha", started_at=NOW - 4000, lifetime_s=30, busy_ms=900)])
    assert metering.ingest("node-a", sent) == 3
    rows, bill = _stored(world.store), metering.bill(_developer(), "acme", None)
    assert metering.ingest("node-a", sent) == 0  # its answer was lost: the node sends it again
    assert _stored(world.store) == rows
    assert metering.bill(_developer(), "acme", None) == bill
    # a batch holding one call twice, and a call already stored, stores only what is new
    again = call(inst, "acme/alpha", request_id="req-twice")
    mixed = batch("node-a", [again, again, sent.records[0], call(inst, "acme/alpha")])
    assert metering.ingest("node-a", mixed) == 2
    assert len(world.store.usage_rows()) == 4


def _expected_bill(store: Store, tenant: str, month: str, sheet: PriceSheet) -> dict[str, Decimal]:
    """The bill's amounts worked out again from the stored rows, by hand."""
    invocations = store.usage_rows(tenant, month)
    lifetimes = {r.instance_id: r.lifetime_ms for r in store.instance_rows(tenant)}
    burst_ms = sheet.burst_lifetime_s * 1000
    init = sum(r.init_ms * r.memory_mib for r in invocations)
    burst = sum(r.init_ms * r.memory_mib for r in invocations
                if r.init_ms > 0 and lifetimes.get(r.instance_id, math.inf) < burst_ms)
    idle = sum(r.idle_ms for r in store.instance_rows(tenant, month))
    startup = {"invocation": init, "platform": 0, "burst": burst}[sheet.cold_start]

    def amount(value: Decimal) -> Decimal:
        return value.quantize(MICRO, rounding=ROUND_HALF_EVEN)

    hours = (Decimal(idle) / 3_600_000).quantize(Decimal("1e-9"), rounding=ROUND_HALF_EVEN)
    return {"requests": amount(len(invocations) * sheet.per_million_requests / 1_000_000),
            "compute": amount(Decimal(sum(r.mib_ms for r in invocations)) / 1_024_000 * sheet.per_gb_second),
            "start-up": amount(Decimal(startup) / 1_024_000 * sheet.per_gb_second),
            "keep-alive": amount(hours * sheet.per_keepalive_instance_hour)}


@pytest.mark.parametrize("policy", ["invocation", "platform", "burst"])
def test_who_pays_for_start_ups(world: World, policy: str) -> None:
    metering = world.metering(cold_start=policy, burst_lifetime_s=60)
    short = world.keys.instance_id("acme/alpha", "node-a")  # a burst's instance: lived 10 s
    long = world.keys.instance_id("acme/alpha", "node-a")  # then served for two minutes
    running = world.keys.instance_id("acme/alpha", "node-a")  # still up: not known to be short yet
    metering.ingest("node-a", batch("node-a", [
        call(short, "acme/alpha", init_ms=300, duration_us=1000, memory_mib=1024),
        call(long, "acme/alpha", init_ms=500, duration_us=1000, memory_mib=1024),
        call(long, "acme/alpha", duration_us=1000, memory_mib=1024),
        call(running, "acme/alpha", init_ms=200, duration_us=1000, memory_mib=1024),
        stopped(short, "acme/alpha", started_at=NOW - 3601, lifetime_s=10, busy_ms=1, memory_mib=1024),
        stopped(long, "acme/alpha", started_at=NOW - 3601, lifetime_s=120, busy_ms=2, memory_mib=1024)]))
    bill = metering.bill(_developer(), "acme", MONTH)
    startup = _lines(bill)["start-up"]
    assert startup.item == f"start-up ({policy})"
    assert startup.quantity * 1_024_000 == {"invocation": 1000 * 1024, "platform": 0,
                                            "burst": 300 * 1024}[policy]
    assert _lines(bill)["compute"].quantity * 1_024_000 == 4 * 1024  # 4 calls of 1 ms at 1 GiB
    assert {k: line.amount for k, line in _lines(bill).items()} == _expected_bill(
        world.store, "acme", MONTH, metering.prices)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_bill_reconciles_with_the_stored_records(world: World, seed: int) -> None:
    rng = random.Random(seed)
    sent: list[tuple[str, UsageRecord]] = []  # (the node that sends it, the record)
    for _ in range(rng.randint(5, 25)):
        function = rng.choice(["acme/alpha", "acme/img-resize"])
        node = rng.choice(["node-a", "node-b"])
        inst = world.keys.instance_id(function, node)
        memory = rng.choice([128, 256, 1024, 3008])
        born = rng.uniform(NOW - 12 * 86_400, NOW - 7200)
        init = rng.choice([0.0, rng.uniform(0.1, 3000)])
        at = born + init / 1000
        for n in range(rng.randint(1, 30)):
            duration = rng.choice([0, 1, 999, 1000, 1001, rng.randint(0, 900_000_000)])
            outcome = rng.choice(["ok", "ok", "ok", "handler_error", "timeout"])
            sent.append((node, call(inst, function, started_at=at, duration_us=duration, memory_mib=memory,
                                    init_ms=init if n == 0 else 0.0, outcome=outcome)))
            at += duration / 1e6 + rng.uniform(0, 30)
        if rng.random() < 0.8:  # the others still run
            lifetime = at - born + rng.uniform(0, 600)
            sent.append((node, stopped(inst, function, started_at=born, lifetime_s=lifetime,
                                       busy_ms=rng.uniform(0, lifetime * 1100), memory_mib=memory,
                                       init_ms=init)))
    sent.append(("node-a", call(world.keys.instance_id("acme/alpha", "node-a"), "acme/alpha",
                                started_at=APRIL)))
    sent.append(("node-a", call(world.keys.instance_id("globex/gamma", "node-a"), "globex/gamma")))
    sent.append(("node-a", call(world.keys.instance_id("acme/alpha", "node-b"), "acme/alpha")))  # not its
    rng.shuffle(sent)
    sheets = {policy: world.metering(cold_start=policy, burst_lifetime_s=rng.choice([5, 60, 300]),
                                     per_keepalive_instance_hour=str(rng.choice([0, 0.013, 7])))
              for policy in ("invocation", "platform", "burst")}
    metering = sheets["invocation"]
    stored = 0
    for node in ("node-a", "node-b"):
        mine = [record for by, record in sent if by == node]
        for i in range(0, len(mine), 37):
            stored += metering.ingest(node, batch(node, mine[i:i + 37]))
    assert stored == len(sent) - 1 and metering.rejected == 1
    rows = _stored(world.store)
    assert metering.ingest("node-b", batch("node-b", [r for by, r in sent if by == "node-b"])) == 0
    assert _stored(world.store) == rows

    for policy, priced in sheets.items():
        bill = priced.bill(_developer(), "acme", None)
        assert bill.month == MONTH and bill.cold_start_policy == policy
        assert bill.total == sum((line.amount for line in bill.lines), Decimal(0))
        assert {k: line.amount for k, line in _lines(bill).items()} == _expected_bill(
            world.store, "acme", MONTH, priced.prices)
    april = metering.bill(_developer(), "acme", "2024-04")
    assert _lines(april)["requests"].quantity == 1
    # the usage table shows the same sums the bill is made of
    table = metering.usage(_developer(), "acme", None, None, "function")
    bill = metering.bill(_developer(), "acme", None)
    assert sum(row["invocations"] for row in table) == _lines(bill)["requests"].quantity
    assert sum(Decimal(row["gb_s"]) for row in table) == _lines(bill)["compute"].quantity


# -- who may read usage and bills -------------------------------------------------------------------------
def _developer(tenant: str = "acme") -> Principal:
    return Principal(user=f"dev-{tenant}", tenant=tenant, role=Role.DEVELOPER)


def _usage_world(world: World) -> Metering:
    metering = world.metering()
    for function in ("acme/alpha", "acme/img-resize"):
        inst = world.keys.instance_id(function, "node-a")
        metering.ingest("node-a", batch("node-a", [call(inst, function), call(inst, function)]))
    return metering


def test_members_with_usage_read_the_usage_and_the_bill(world: World) -> None:
    metering = _usage_world(world)
    cluster_admin = Principal(user="admin", tenant="default", role=Role.ADMIN)
    for user in (_developer(), Principal(user="boss", tenant="acme", role=Role.ADMIN), cluster_admin,
                 Principal(user="auditor", tenant="globex", role=Role.INVOKER,
                           grants=frozenset({Grant(Permission.USAGE, "acme", "*")}))):
        rows = metering.usage(user, "acme", None, None, "function")
        assert [(r["function"], r["invocations"]) for r in rows] == [("acme/alpha", 2),
                                                                      ("acme/img-resize", 2)]
        assert metering.bill(user, "acme", None).total == metering.price("acme", MONTH).total
    # their own tenant by default
    assert metering.bill(_developer(), None, None).tenant == "acme"


@pytest.mark.parametrize("user", [
    Principal(user="ivan", tenant="acme", role=Role.INVOKER),  # its role gives no usage
    Principal(user="ivan", tenant="acme", role=Role.INVOKER,
              grants=frozenset({Grant(Permission.LOGS, "acme", "*"), Grant(Permission.INVOKE, "acme", "*")})),
    _developer("globex"),  # another tenant's
    Principal(user="dev", tenant="acme", role=Role.DEVELOPER,  # a token scoped to invoking only
              scopes=frozenset({Grant(Permission.INVOKE, "acme", "*")})),
], ids=["invoker", "other-grants", "other-tenant", "scoped-token"])
def test_without_usage_permission_usage_and_bill_are_forbidden(world: World, user: Principal) -> None:
    metering = _usage_world(world)
    with pytest.raises(Forbidden) as refused:
        metering.usage(user, "acme", None, None, "function")
    assert refused.value.body()["error"]["missing"] == "usage"
    with pytest.raises(Forbidden) as refused:
        metering.bill(user, "acme", None)
    assert refused.value.body()["error"]["missing"] == "usage" and refused.value.status == 403


def test_a_grant_on_some_functions_shows_their_usage_but_no_bill(world: World) -> None:
    metering = _usage_world(world)
    ivan = Principal(user="ivan", tenant="globex", role=Role.INVOKER,
                     grants=frozenset({Grant(Permission.USAGE, "acme", "img-*")}))
    rows = metering.usage(ivan, "acme", None, None, "function")
    assert [r["function"] for r in rows] == ["acme/img-resize"]
    with pytest.raises(Forbidden, match="which a bill needs"):
        metering.bill(ivan, "acme", None)


def test_a_grant_on_one_letter_names_is_no_grant_on_the_whole_tenant(world: World) -> None:
    # "?" matches the functions whose name is one letter; FunctionRef(tenant, "*"), which stands
    # for "every function of the tenant" in usage() and bill(), is such a name to fnmatch.
    metering = _usage_world(world)
    ivan = Principal(user="ivan", tenant="globex", role=Role.INVOKER,
                     grants=frozenset({Grant(Permission.USAGE, "acme", "?")}))
    with pytest.raises(Forbidden):
        metering.usage(ivan, "acme", None, None, "function")  # acme has no one-letter function
    with pytest.raises(Forbidden):
        metering.bill(ivan, "acme", None)


def test_unknown_tenants_and_bad_arguments(world: World) -> None:
    metering = _usage_world(world)
    admin = Principal(user="admin", tenant="default", role=Role.ADMIN)
    with pytest.raises(Forbidden, match="no access to tenant"):
        metering.bill(admin, "initech", None)
    with pytest.raises(Forbidden, match="no access to tenant"):
        metering.usage(admin, "initech", None, None, "day")
    with pytest.raises(InvalidConfig, match="YYYY-MM"):
        metering.bill(admin, "acme", "May 2024")
    with pytest.raises(InvalidConfig, match="by must be one of"):
        metering.usage(admin, "acme", None, None, "hour")


# -- budgets ----------------------------------------------------------------------------------------------
ONE_EACH = {"per_million_requests": "1000000", "per_gb_second": "0", "per_keepalive_instance_hour": "0"}


def _spend(world: World, metering: Metering, calls: int, tenant: str = "acme") -> None:
    """`calls` more calls of `tenant` this month (each costs 1 at ONE_EACH)."""
    function = f"{tenant}/alpha" if tenant == "acme" else f"{tenant}/gamma"
    inst = world.keys.instance_id(function, "node-a")
    metering.ingest("node-a", batch("node-a", [call(inst, function, started_at=world.wall.t - 60)
                                               for _ in range(calls)]))


@pytest.mark.parametrize(("action", "over"), [("throttle", "budget_throttled"), ("warn", "budget_over")])
def test_a_budget_warns_at_80_percent_and_marks_the_tenant_at_100(world: World, action: str,
                                                                  over: str) -> None:
    world.store.update_tenant("acme", budget=10, budget_action=action)
    metering = world.metering(**ONE_EACH)
    _spend(world, metering, 7)
    metering.check_budgets()
    assert world.events == [] and world.store.tenant("acme").over_budget_month is None

    _spend(world, metering, 1)  # 8 of 10
    metering.check_budgets()
    metering.check_budgets()
    assert world.kinds() == ["budget_warning"]
    assert "acme" in world.events[0][1] and "80%" in world.events[0][1]
    assert world.store.tenant("acme").over_budget_month is None and world.changes == 0

    _spend(world, metering, 2)  # 10 of 10
    metering.check_budgets()
    metering.check_budgets()
    assert world.kinds() == ["budget_warning", "budget_exceeded", over]
    assert world.store.tenant("acme").over_budget_month == MONTH and world.changes == 1
    assert [a.level for a in world.store.budget_alerts("acme")] == [80, 100]

    world.store.update_tenant("acme", budget=100)  # raised: let go, no new alert
    metering.check_budgets()
    assert world.kinds()[3:] == ["budget_released"]
    assert world.store.tenant("acme").over_budget_month is None and world.changes == 2
    metering.check_budgets()
    assert len(world.events) == 4


def test_a_jump_past_the_budget_records_both_alerts_at_once(world: World) -> None:
    world.store.update_tenant("acme", budget=3)
    world.store.update_tenant("globex", budget=1000)
    metering = world.metering(**ONE_EACH)
    _spend(world, metering, 5)
    _spend(world, metering, 5, tenant="globex")
    metering.check_budgets()
    assert world.kinds() == ["budget_warning", "budget_exceeded", "budget_throttled"]
    assert all("tenant acme" in reason for _, reason in world.events)
    assert world.store.tenant("globex").over_budget_month is None
    assert world.store.tenant("default").over_budget_month is None  # no budget: never checked


def test_a_new_month_lets_the_tenant_go_and_alerts_again(world: World) -> None:
    world.store.update_tenant("acme", budget=2)
    metering = world.metering(**ONE_EACH)
    _spend(world, metering, 2)
    metering.check_budgets()
    assert world.store.tenant("acme").over_budget_month == MONTH
    world.wall.t = JUNE
    metering.check_budgets()
    assert world.kinds()[-1] == "budget_released" and world.store.tenant("acme").over_budget_month is None
    _spend(world, metering, 2)
    metering.check_budgets()
    assert world.kinds()[-3:] == ["budget_warning", "budget_exceeded", "budget_throttled"]
    assert world.store.tenant("acme").over_budget_month == "2024-06"


def test_clearing_the_budget_releases_the_tenant(world: World) -> None:
    world.store.update_tenant("acme", budget=1, budget_action="warn")
    metering = world.metering(**ONE_EACH)
    _spend(world, metering, 1)
    metering.check_budgets()
    assert world.kinds()[-1] == "budget_over"
    world.store.update_tenant("acme", clear_budget=True)
    metering.check_budgets()
    assert world.kinds()[-1] == "budget_released" and world.store.tenant("acme").over_budget_month is None
