"""Metering, quotas and budgets through the real parts: a `cumulus up` process, its local node
agent and Docker containers. Every call that reached an instance is one usage record (by request
id) with its billed duration, memory, GB·s, init time and outcome; every instance one record of its
lifetime and idle time; bills are priced from exactly those records; the control plane SIGKILLed
under load loses none and counts none twice; tenants' concurrency quota and budget bound their
calls, and an over-budget tenant makes the fleet grow no more."""

from __future__ import annotations

import json
import math
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import RunningPlatform, start_platform, wait_for

from control_plane.store import InstanceUsage, InvocationUsage, Store

pytestmark = pytest.mark.docker

WORK = {"main.py": "import time\n\ndef handler(event, context):\n    time.sleep(event.get('s', 0))\n"
                   "    if event.get('fail'):\n        raise ValueError('asked to fail')\n    return event\n"}
FAST = {"CUMULUS_BUDGET_CHECK_INTERVAL_S": "0.3", "CUMULUS_NODE_CPU_MILLIS": "2000",
        "CUMULUS_NODE_MEMORY_MIB": "1024"}


def _store(plat: RunningPlatform, db: str | None = None) -> Store:
    return Store(db or f"sqlite:///{plat.data_dir / 'cumulus.db'}")


def _records(store: Store, tenant: str | None = None) -> dict[str, InvocationUsage]:
    return {r.request_id: r for r in store.usage_rows(tenant)}


def _price(invocations: list[InvocationUsage], instances: list[InstanceUsage]) -> Decimal:
    """The default price sheet applied to the records by hand: requests, GB·s, and init billed to
    the calls that waited for it (the "invocation" policy); keep-alive is free by default."""
    q = Decimal("0.000001")
    requests_ = (Decimal(len(invocations)) * Decimal("0.20") / Decimal(1_000_000)).quantize(q)
    gb_s = Decimal(sum(r.mib_ms for r in invocations)) / Decimal(1_024_000)
    compute = (gb_s * Decimal("0.0000166667")).quantize(q)
    init = Decimal(sum(r.init_ms * r.memory_mib for r in invocations)) / Decimal(1_024_000)
    start_up = (init * Decimal("0.0000166667")).quantize(q)
    return requests_ + compute + start_up


# -- every call and every instance, metered ----------------------------------------------------------
def test_every_call_and_instance_is_metered_and_the_bill_is_their_sum(docker_engine: None,
                                                                       tmp_path: Path) -> None:
    plat = start_platform(tmp_path / "plat", extra_env=FAST)
    try:
        plat.deploy_ok("work", WORK, memory_mb=128, keep_alive_s=2, timeout_s=10)
        calls: dict[str, tuple[int, bool]] = {}
        for i in range(12):
            resp = plat.invoke("work", {"s": 0.05, "fail": i % 4 == 3})
            assert resp.status_code == (500 if i % 4 == 3 else 200), resp.text
            calls[resp.headers["X-Request-Id"]] = (resp.status_code,
                                                   resp.headers["X-Cumulus-Cold-Start"] == "true")
        store = _store(plat)
        wait_for(lambda: set(_records(store)) >= set(calls), 20, interval=0.2, what="the calls' records")
        records = _records(store)
        assert set(records) == set(calls)
        for rid, (status, cold) in calls.items():
            r = records[rid]
            assert (r.tenant, r.function, r.version, r.memory_mib) == ("default", "work", 1, 128)
            assert r.outcome == ("ok" if status == 200 else "HandlerError"), r
            assert r.billed_ms >= 50 and r.billed_ms == max(1, math.ceil(r.duration_us / 1000)), r
            assert r.mib_ms == r.billed_ms * 128
            assert (r.init_ms > 0) == cold, r  # the call that waited for the start pays its init
        assert sum(1 for s, cold in calls.values() if cold) == 1

        # The instance ends after its keep-alive: one record of its lifetime, busy and idle time.
        wait_for(lambda: store.instance_rows(), 30, interval=0.3, what="the instance's record")
        (inst,) = store.instance_rows()
        assert inst.instance_id == next(iter(records.values())).instance_id
        assert inst.lifetime_ms >= 2000 and inst.init_ms > 0
        assert inst.idle_ms == inst.lifetime_ms - inst.busy_ms
        assert inst.busy_ms >= sum(r.duration_us for r in records.values()) // 1000 - 12

        usage = plat.get("/v1/usage")
        (row,) = usage
        assert (row["function"], row["invocations"], row["errors"], row["cold_starts"]) == ("work", 12, 3, 1)
        assert row["billed_ms"] == sum(r.billed_ms for r in records.values())
        assert Decimal(row["gb_s"]) == Decimal(sum(r.mib_ms for r in records.values())) / Decimal(1_024_000)
        assert row["instances"] == 1 and row["idle_s"] == inst.idle_ms / 1000
        bill = plat.get("/v1/bill")
        assert Decimal(bill["total"]) == sum(Decimal(line["amount"]) for line in bill["lines"])
        assert Decimal(bill["total"]) == _price(list(records.values()), [inst])
        csv_text = requests.get(f"{plat.url}/v1/bill?format=csv", headers=plat.headers, timeout=30).text
        assert csv_text.strip().splitlines()[-1].split(",")[-2] == bill["total"]
        print(f"metered: calls={len(calls)} records={len(records)} instances=1 bill={bill['total']} "
              f"{bill['currency']}")
    finally:
        plat.stop()


# -- the control plane SIGKILLed under load --------------------------------------------------------
@dataclass
class Caller:
    """Calls in a thread: each answered call's request id and status; connection errors counted."""

    plat: RunningPlatform
    rng: random.Random
    stop: threading.Event
    left: list[int]  # calls still to make, shared by the callers
    lock: threading.Lock
    answered: dict[str, int] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)  # answered without reaching an instance
    lost: int = 0  # connection errors: the call may or may not have run

    def run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                if self.left[0] <= 0:
                    return
                self.left[0] -= 1
            fail = self.rng.random() < 0.2
            try:
                resp = requests.post(f"{self.plat.url}/v1/functions/load/invoke",
                                     data=json.dumps({"s": 0.02, "fail": fail}),
                                     headers=self.plat.headers, timeout=60)
            except requests.RequestException:
                self.lost += 1
                time.sleep(0.05)
                continue
            rid = resp.headers.get("X-Request-Id")
            if rid and resp.status_code in (200, 500) and \
                    (resp.status_code == 200 or "asked to fail" in resp.text):
                self.answered[rid] = resp.status_code
            else:
                self.refused[f"{resp.status_code} {resp.text[:60]}"] += 1


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def test_sigkills_of_the_control_plane_lose_no_record_and_count_none_twice(
        chaos_dir: Path, database: str, request: pytest.FixtureRequest) -> None:
    rng = random.Random(20261203)
    n_calls, kills = 600, 4
    db = str(request.getfixturevalue("postgres_db")) if database == "postgresql" else None
    args = ("--min-nodes", "1", "--max-nodes", "1", *(("--db", db) if db else ()))
    plat = start_platform(chaos_dir, extra_env=FAST, args=args)
    stop = threading.Event()
    left, lock = [n_calls], threading.Lock()
    callers = [Caller(plat, random.Random(rng.random()), stop, left, lock) for _ in range(4)]
    threads = [threading.Thread(target=c.run) for c in callers]
    try:
        plat.deploy_ok("load", WORK, memory_mb=128, concurrency=4, max_instances=2, keep_alive_s=60,
                       timeout_s=10)
        for t in threads:
            t.start()
        port = int(plat.url.rsplit(":", 1)[1])
        for _ in range(kills):
            time.sleep(rng.uniform(1.0, 3.0))
            plat.proc.send_signal(signal.SIGKILL)
            plat.proc.wait(30)
            plat = start_platform(chaos_dir, extra_env=FAST, args=args, port=port)
            for c in callers:
                c.plat = plat
        for t in threads:
            t.join(300)
        assert not any(t.is_alive() for t in threads)

        answered = {rid: s for c in callers for rid, s in c.answered.items()}
        lost = sum(c.lost for c in callers)
        store = _store(plat, db)
        wait_for(lambda: set(_records(store)) >= set(answered), 60, interval=0.5,
                 what="a record of every answered call")
        time.sleep(2)  # what the agent still held is in by now
        records = _records(store)
        rows = store.usage_rows()
        # Every answered call is counted once, with its outcome; a call whose answer was lost with
        # the control plane may have run (and is then counted: it used the instance), no more.
        assert len(rows) == len(records)
        assert set(answered) <= set(records)
        unanswered = set(records) - set(answered)
        assert len(unanswered) <= lost
        for rid, status in answered.items():
            assert records[rid].outcome == ("ok" if status == 200 else "HandlerError"), (rid, records[rid])
        # The usage and the bill are these records, exactly.
        (row,) = plat.get("/v1/usage")
        assert row["invocations"] == len(records)
        assert row["errors"] == sum(1 for r in records.values() if r.outcome != "ok")
        bill = plat.get("/v1/bill")
        assert Decimal(bill["lines"][0]["quantity"]) == len(records)
        assert Decimal(bill["total"]) == sum(Decimal(line["amount"]) for line in bill["lines"])
        assert Decimal(bill["total"]) == _price(list(records.values()), store.instance_rows())
        log = (chaos_dir / "control-plane.log").read_text(errors="replace")  # every run's, appended
        resent = sum(int(m) for m in re.findall(r"event=usage_duplicates .* duplicates=(\d+)", log))
        refused = Counter[str]()
        for c in callers:
            refused.update(c.refused)
        print(f"metering chaos ({database}): kills={kills} calls={n_calls} answered={len(answered)} "
              f"(ok={sum(1 for s in answered.values() if s == 200)}, "
              f"failed={sum(1 for s in answered.values() if s == 500)}) connection_errors={lost} "
              f"refused={sum(refused.values())} records={len(records)} "
              f"records_of_unanswered={len(unanswered)} resent_and_dropped={resent} missing=0 "
              f"double_counted=0 bill={bill['total']}")
        assert len(answered) > n_calls // 2
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        plat.stop()


# -- quotas and budgets -------------------------------------------------------------------------------
PRICES = """[billing]
per_million_requests = 1000000
per_gb_second = 0
cold_start = "platform"
"""


@pytest.fixture(scope="module")
def plat(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """One platform where every request costs 1 USD (so budgets are crossed in a few calls), with
    room for two nodes."""
    data = tmp_path_factory.mktemp("budgets")
    (data / "cumulus.toml").write_text(PRICES)
    platform = start_platform(data / "plat", extra_env=FAST,
                              args=("--config", str(data / "cumulus.toml"), "--max-nodes", "2"))
    yield platform
    platform.stop()


def _user(plat: RunningPlatform, tenant: str, **tenant_settings: Any) -> dict[str, str]:
    """A tenant and a developer of it; the developer's Authorization header."""
    resp = requests.post(f"{plat.url}/v1/tenants", headers=plat.headers, timeout=30,
                         json={"name": tenant, **tenant_settings})
    assert resp.status_code == 201, resp.text
    resp = requests.post(f"{plat.url}/v1/users", headers=plat.headers, timeout=30,
                         json={"name": f"dev-{tenant}", "tenant": tenant, "role": "developer"})
    assert resp.status_code == 201, resp.text
    resp = requests.post(f"{plat.url}/v1/tokens", headers=plat.headers, timeout=30,
                         json={"user": f"dev-{tenant}"})
    assert resp.status_code == 201, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


def _deploy(plat: RunningPlatform, headers: dict[str, str], name: str, **config: Any) -> None:
    from helpers import make_zip

    resp = requests.post(f"{plat.url}/v1/functions", headers=headers, timeout=300,
                         files={"code": ("code.zip", make_zip(WORK), "application/zip")},
                         data={"config": json.dumps({"name": name, **config})})
    assert resp.status_code == 201, resp.text


def _call(plat: RunningPlatform, headers: dict[str, str], name: str, event: Any) -> requests.Response:
    return requests.post(f"{plat.url}/v1/functions/{name}/invoke", headers=headers,
                         data=json.dumps(event), timeout=60)


def _events(plat: RunningPlatform, kind: str) -> list[dict[str, Any]]:
    return [e for e in plat.get("/v1/events?limit=1000") if e["kind"] == kind]


def test_a_tenant_at_its_concurrency_quota_gets_429_with_retry_after(plat: RunningPlatform) -> None:
    dev = _user(plat, "narrow", quotas={"concurrency": 1})
    _deploy(plat, dev, "slow", memory_mb=64, concurrency=4)
    warm = _call(plat, dev, "slow", {})
    assert warm.status_code == 200, warm.text
    out: dict[str, requests.Response] = {}
    first = threading.Thread(target=lambda: out.update(first=_call(plat, dev, "slow", {"s": 2})))
    first.start()
    time.sleep(0.5)
    second = _call(plat, dev, "slow", {})
    first.join(30)
    assert out["first"].status_code == 200
    assert second.status_code == 429, second.text
    assert second.json()["error"]["type"] == "QuotaExceeded"
    assert second.json()["error"]["quota"] == "concurrency"
    assert int(second.headers["Retry-After"]) >= 1
    assert _call(plat, dev, "slow", {}).status_code == 200  # the slot is free again


def test_a_budget_warns_at_80_percent_throttles_at_100_and_stops_the_fleet_growing(
        plat: RunningPlatform) -> None:
    dev = _user(plat, "spender", budget=10, budget_action="throttle")
    _deploy(plat, dev, "pay", memory_mb=64)
    for _ in range(8):
        assert _call(plat, dev, "pay", {}).status_code == 200
    wait_for(lambda: any("spender" in e["reason"] for e in _events(plat, "budget_warning")), 30,
             interval=0.2, what="the 80% budget warning")
    assert not _events(plat, "budget_throttled")
    for _ in range(2):
        assert _call(plat, dev, "pay", {}).status_code == 200
    wait_for(lambda: any("spender" in e["reason"] for e in _events(plat, "budget_throttled")), 30,
             interval=0.2, what="the tenant throttled at 100%")
    refused: list[requests.Response] = []  # (a Response of an error is falsy: kept in a list)
    wait_for(lambda: (r := _call(plat, dev, "pay", {})).status_code == 429 and not refused.append(r), 10,
             interval=0.2, what="a call refused for the budget")
    over = refused[0]
    assert over.json()["error"]["type"] == "BudgetExceeded" and int(over.headers["Retry-After"]) >= 1
    assert any("spender" in e["reason"] for e in _events(plat, "budget_exceeded"))
    plat.deploy_ok("free", WORK, memory_mb=64)
    assert plat.invoke("free", {}).status_code == 200  # other tenants are not throttled

    # Warned only: its calls are served again, but the fleet does not grow for it. Its function asks
    # for more instances than the node holds (1024 MiB): no node is added while it is over budget.
    resp = requests.patch(f"{plat.url}/v1/tenants/spender", headers=plat.headers, timeout=30,
                          json={"budget_action": "warn"})
    assert resp.status_code == 200, resp.text
    wait_for(lambda: _call(plat, dev, "pay", {}).status_code == 200, 10, interval=0.2,
             what="calls served again once only warned")
    adds = len(_events(plat, "node_add"))
    _deploy(plat, dev, "wide", memory_mb=256, min_instances=6, max_instances=6)
    time.sleep(6)
    assert len(_events(plat, "node_add")) == adds, "the fleet grew for a tenant over its budget"
    assert len(plat.get("/v1/nodes")) == 1
    # A raised budget lets it go: now the fleet grows for it.
    resp = requests.patch(f"{plat.url}/v1/tenants/spender", headers=plat.headers, timeout=30,
                          json={"budget": 1_000_000})
    assert resp.status_code == 200, resp.text
    wait_for(lambda: any("spender" in e["reason"] for e in _events(plat, "budget_released")), 30,
             interval=0.2, what="the budget released")
    wait_for(lambda: len(_events(plat, "node_add")) > adds, 60, interval=0.5,
             what="a node added for the tenant once under budget")
