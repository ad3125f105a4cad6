"""The Governor, where calls are admitted: the rate quota's token bucket, the concurrency quota, each
control plane's share of them, the budget throttle, the instances quota, and the errors' bodies and
`Retry-After` headers, all on a manual clock (no sleeping)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_plane.core import BudgetExceeded, ManualClock, QuotaExceeded, Throttled
from control_plane.core.errors import CumulusError
from control_plane.identity import Governor
from control_plane.identity.quotas import Bucket
from control_plane.store import Tenant


def tenant(name: str = "acme", *, over_budget: str | None = None, budget_action: str = "throttle",
           **quotas: Any) -> Tenant:
    """A tenant's row, as the store holds it."""
    return Tenant(name=name, quotas=quotas, budget=None if over_budget is None else 10.0,
                  budget_action=budget_action, over_budget_month=over_budget)


def governor(*tenants: Tenant, clock: ManualClock | None = None, peers: int = 1) -> Governor:
    gov = Governor(clock or ManualClock(), peers=lambda: peers)
    gov.load(tenants)
    return gov


def call(gov: Governor, name: str = "acme") -> None:
    """One call, admitted and ended at once (only the rate counts)."""
    gov.admit(name)
    gov.leave(name)


def admitted_at_once(gov: Governor, name: str = "acme", most: int = 1000) -> int:
    """How many calls the governor admits now, one after the other."""
    for n in range(most):
        try:
            call(gov, name)
        except QuotaExceeded:
            return n
    return most


# -- the rate quota ---------------------------------------------------------------------------------------
def test_the_rate_quota_admits_a_burst_then_one_call_per_token() -> None:
    clock = ManualClock()
    gov = governor(tenant(rps=2, burst=3), clock=clock)
    for _ in range(3):
        call(gov)
    with pytest.raises(QuotaExceeded) as refused:
        call(gov)
    assert refused.value.extra["quota"] == "rps" and refused.value.status == 429
    assert refused.value.retry_after_s == pytest.approx(0.5)  # the next token, at 2 a second
    assert "2 invocations per second" in refused.value.message
    clock.advance(0.3)
    with pytest.raises(QuotaExceeded) as refused:
        call(gov)
    assert refused.value.retry_after_s == pytest.approx(0.2)
    clock.advance(0.2)
    call(gov)
    with pytest.raises(QuotaExceeded):
        call(gov)
    assert gov.in_flight == {}


def test_the_rate_quota_holds_over_time() -> None:
    clock = ManualClock()
    gov = governor(tenant(rps=4, burst=2), clock=clock)
    admitted = 0
    for _ in range(1000):  # a call every 10 ms for 10 s
        try:
            call(gov)
            admitted += 1
        except QuotaExceeded:
            pass
        clock.advance(0.01)
    assert admitted == 2 + 39  # the burst, then 4 a second for 9.99 s


def test_an_idle_bucket_fills_up_to_its_burst_only() -> None:
    clock = ManualClock()
    gov = governor(tenant(rps=10, burst=5), clock=clock)
    assert admitted_at_once(gov) == 5
    clock.advance(3600)
    assert admitted_at_once(gov) == 5


@pytest.mark.parametrize(("rps", "burst", "at_once", "next_token_s"), [
    (5, None, 5, 0.2),  # no burst: the rate's worth
    (0.5, None, 1, 2.0),  # at least one call
    (2.5, None, 3, 0.4),  # rounded up
    (1, 4, 4, 1.0),
])
def test_the_burst_defaults_to_a_seconds_worth(rps: float, burst: int | None, at_once: int,
                                              next_token_s: float) -> None:
    quotas: dict[str, Any] = {"rps": rps} if burst is None else {"rps": rps, "burst": burst}
    gov = governor(tenant(**quotas))
    assert admitted_at_once(gov) == at_once
    with pytest.raises(QuotaExceeded) as refused:
        call(gov)
    assert refused.value.retry_after_s == pytest.approx(next_token_s)


@given(rps=st.sampled_from([0.5, 1, 2, 3, 5, 7, 10, 25, 100]), burst=st.integers(1, 5),
       peers=st.integers(1, 3), start=st.sampled_from([0.0, 1000.0, 86_400.5]),
       after=st.floats(0, 1, allow_nan=False))
def test_waiting_the_time_it_says_is_enough(rps: float, burst: int, peers: int, start: float,
                                            after: float) -> None:
    clock = ManualClock(start)
    gov = governor(tenant(rps=rps, burst=burst), clock=clock, peers=peers)
    admitted_at_once(gov)
    clock.advance(after * peers / rps)  # part of the way to the next token, or past it
    try:
        call(gov)
        return
    except QuotaExceeded as refused:
        wait = refused.retry_after_s
    assert wait is not None and wait > 0
    clock.advance(wait)
    call(gov)  # "retry after `wait`" means this call is admitted


def test_waiting_the_time_it_says_after_a_tenth_of_a_token() -> None:
    # 10 a second, one token: at 0.01 s a tenth of the next token has come, 0.09 s more to wait.
    clock = ManualClock(0.0)
    gov = governor(tenant(rps=10, burst=1), clock=clock)
    call(gov)
    clock.advance(0.01)
    with pytest.raises(QuotaExceeded) as refused:
        call(gov)
    assert refused.value.retry_after_s == pytest.approx(0.09)
    clock.advance(refused.value.retry_after_s or 0)
    call(gov)


def test_the_next_token_is_no_sooner_than_it_says() -> None:
    bucket = Bucket(rate=4, burst=1, tokens=0, at=100.0)
    wait = bucket.take(100.0)
    assert wait == pytest.approx(0.25)
    assert bucket.take(100.0 + wait * 0.99) > 0


# -- the concurrency quota --------------------------------------------------------------------------------
def test_the_concurrency_quota_refuses_the_call_over_it_until_one_leaves() -> None:
    gov = governor(tenant(concurrency=2))
    gov.admit("acme")
    gov.admit("acme")
    with pytest.raises(QuotaExceeded) as refused:
        gov.admit("acme")
    assert refused.value.extra["quota"] == "concurrency" and refused.value.retry_after_s == 1
    assert "2 call(s) running" in refused.value.message and "concurrency quota of 2" in refused.value.message
    assert gov.in_flight == {"acme": 2}  # the refused call is not counted
    gov.leave("acme")
    gov.admit("acme")
    with pytest.raises(QuotaExceeded):
        gov.admit("acme")
    for _ in range(3):
        gov.leave("acme")  # one more than running: never below zero
    assert gov.in_flight == {}
    gov.admit("acme")
    gov.admit("acme")


def test_a_concurrency_quota_of_zero_admits_nothing() -> None:
    gov = governor(tenant(concurrency=0))
    with pytest.raises(QuotaExceeded, match="concurrency"):
        gov.admit("acme")


def test_a_call_refused_for_concurrency_takes_no_token() -> None:
    gov = governor(tenant(concurrency=1, rps=1, burst=2))
    gov.admit("acme")  # one token left
    with pytest.raises(QuotaExceeded) as refused:
        gov.admit("acme")
    assert refused.value.extra["quota"] == "concurrency"
    gov.leave("acme")
    gov.admit("acme")  # the token is still there: no time passed


# -- each control plane's share ---------------------------------------------------------------------------
@pytest.mark.parametrize(("concurrency", "peers", "share"), [(4, 2, 2), (3, 2, 2), (1, 2, 1), (1, 3, 1),
                                                             (10, 3, 4), (5, 1, 5)])
def test_each_control_plane_admits_its_share_of_the_concurrency(concurrency: int, peers: int,
                                                                  share: int) -> None:
    gov = governor(tenant(concurrency=concurrency), peers=peers)
    for _ in range(share):
        gov.admit("acme")
    with pytest.raises(QuotaExceeded) as refused:
        gov.admit("acme")
    assert (f"share: 1/{peers}" in refused.value.message) == (peers > 1)


def test_each_control_plane_admits_its_share_of_the_rate() -> None:
    clock = ManualClock()
    gov = governor(tenant(rps=4, burst=3), clock=clock, peers=2)
    assert admitted_at_once(gov) == 2  # half the burst, rounded up
    with pytest.raises(QuotaExceeded) as refused:
        call(gov)
    assert refused.value.retry_after_s == pytest.approx(0.5)  # half the rate: 2 a second
    assert "share: 1/2" in refused.value.message


def test_a_change_of_peers_makes_the_share_anew() -> None:
    clock, peers = ManualClock(), [1]
    gov = Governor(clock, peers=lambda: peers[0])
    gov.load([tenant(rps=10, burst=10, concurrency=4)])
    assert admitted_at_once(gov) == 10
    peers[0] = 2  # another control plane joined
    assert admitted_at_once(gov) == 5
    clock.advance(60)
    for _ in range(2):
        gov.admit("acme")
    with pytest.raises(QuotaExceeded, match="concurrency"):
        gov.admit("acme")


# -- budgets ----------------------------------------------------------------------------------------------
def test_a_tenant_over_budget_with_throttle_is_refused() -> None:
    gov = governor(tenant(over_budget="2024-05", budget_action="throttle"))
    with pytest.raises(BudgetExceeded) as refused:
        gov.admit("acme")
    assert refused.value.status == 429 and "2024-05" in refused.value.message
    assert refused.value.body()["error"]["type"] == "BudgetExceeded"
    assert refused.value.headers() == {"Retry-After": "3600"}
    assert gov.in_flight == {}
    assert gov.blocked("acme") == "over its budget for 2024-05"


def test_a_tenant_over_budget_with_warn_is_served_but_grows_no_fleet() -> None:
    gov = governor(tenant(over_budget="2024-05", budget_action="warn", concurrency=5))
    gov.admit("acme")
    assert gov.in_flight == {"acme": 1}
    assert gov.blocked("acme") == "over its budget for 2024-05"


def test_a_tenant_within_its_budget_is_not_blocked() -> None:
    gov = governor(tenant(concurrency=5), tenant("globex", over_budget=None, budget_action="warn"))
    assert gov.blocked("acme") is None and gov.blocked("globex") is None and gov.blocked("initech") is None


# -- instances, unknown tenants, reloads ------------------------------------------------------------------
def test_the_instances_quota() -> None:
    gov = governor(tenant(instances=4, rps=100), tenant("globex", rps=5))
    assert gov.instance_quota("acme") == 4
    assert gov.instance_quota("globex") is None
    assert gov.instance_quota("initech") is None


def test_unknown_tenants_and_tenants_without_quotas_are_unbounded() -> None:
    gov = governor(tenant(rps=1, burst=1), tenant("globex"), tenant("initech", rps=None, concurrency=None))
    assert set(gov.limits) == {"acme"}
    for name in ("umbrella", "globex", "initech"):
        for _ in range(1000):
            gov.admit(name)  # never left: 1000 at once
        assert gov.in_flight[name] == 1000
        assert gov.instance_quota(name) is None and gov.blocked(name) is None


def test_loading_changed_limits_starts_the_buckets_anew() -> None:
    clock = ManualClock()
    gov = governor(tenant(rps=1, burst=1), tenant("globex", concurrency=3), clock=clock)
    call(gov)
    with pytest.raises(QuotaExceeded):
        call(gov)
    gov.load([tenant(rps=1, burst=1), tenant("globex", concurrency=3)])  # the same: kept
    with pytest.raises(QuotaExceeded):
        call(gov)
    gov.load([tenant(rps=1, burst=3), tenant("globex", concurrency=3)])  # a new burst
    assert admitted_at_once(gov) == 3
    gov.load([tenant(), tenant("globex", concurrency=3)])  # its quota removed: unbounded
    assert admitted_at_once(gov) == 1000
    gov.load([tenant(over_budget="2024-05")])
    with pytest.raises(BudgetExceeded):
        gov.admit("acme")
    gov.load([tenant()])  # let go
    gov.admit("acme")


def test_calls_in_flight_survive_a_reload() -> None:
    gov = governor(tenant(concurrency=2))
    gov.admit("acme")
    gov.admit("acme")
    gov.load([tenant(concurrency=3)])
    gov.admit("acme")
    with pytest.raises(QuotaExceeded):
        gov.admit("acme")


# -- the errors' bodies and headers -----------------------------------------------------------------------
def test_a_quota_error_names_its_quota_in_the_body() -> None:
    gov = governor(tenant(rps=1, burst=1, concurrency=1))
    gov.admit("acme")
    with pytest.raises(QuotaExceeded) as refused:
        gov.admit("acme")
    body = refused.value.body()
    assert body == {"error": {"type": "QuotaExceeded", "message": refused.value.message,
                              "quota": "concurrency"}}
    gov.leave("acme")
    with pytest.raises(QuotaExceeded) as refused:
        gov.admit("acme")
    assert refused.value.body()["error"]["quota"] == "rps"
    assert refused.value.headers() == {"Retry-After": "1"}


@pytest.mark.parametrize(("retry_after_s", "header"), [
    (1e-12, "1"), (0.2, "1"), (1.0, "1"), (1.000001, "2"), (2.0, "2"), (59.5, "60"), (3600, "3600"),
])
def test_retry_after_is_whole_seconds_and_at_least_one(retry_after_s: float, header: str) -> None:
    for error in (QuotaExceeded("over", quota="rps", retry_after_s=retry_after_s),
                  BudgetExceeded("over", retry_after_s=retry_after_s)):
        assert error.headers() == {"Retry-After": header}


def test_errors_that_do_not_say_when_have_no_retry_after() -> None:
    assert QuotaExceeded("too many functions", quota="functions", status=403).headers() == {}
    assert QuotaExceeded("too many functions", quota="functions", status=403).status == 403
    assert Throttled("busy").headers() == {}
    assert CumulusError("boom").headers() == {}
