"""Tenants' quotas and budgets where calls are admitted: invocations per second (a token bucket),
calls at once, instances at once, and the throttle of a tenant over its budget.

Each control plane admits its own share: with N live control planes (HA), a tenant's rate, burst
and concurrency are split N ways (rounded up, at least 1), so the cluster as a whole stays within
them however a load balancer spreads the calls. Instances are counted over the whole fleet (every
control plane sees every node's instances). The limits are the tenants' rows, reloaded whenever
the identity generation moves (`Authenticator.refresh`), so a quota change or a budget throttle
reaches every control plane within a poll.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cachetools import LRUCache

from control_plane.core import BudgetExceeded, Clock, QuotaExceeded
from control_plane.store import Tenant

MAX_TENANTS = 100_000
TOKEN_SLACK = 1e-6  # float error in times and rates must not hold back a token that is due


@dataclass(slots=True)
class Bucket:
    """A token bucket: `rate` tokens a second, at most `burst` held."""

    rate: float
    burst: float
    tokens: float
    at: float
    peers: int = 1  # the control planes sharing the tenant's rate when it was made

    def take(self, now: float) -> float:
        """Take one token; 0 if there was one, else how long until there is."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1 - TOKEN_SLACK:
            self.tokens = max(0.0, self.tokens - 1)
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """What one tenant may use at runtime (None: unbounded)."""

    concurrency: int | None = None
    instances: int | None = None
    rps: float | None = None
    burst: int | None = None
    over_budget: str | None = None  # the month it went over its budget in
    throttle: bool = True  # refuse its calls while over budget (else only warn)
    mail_per_min: int | None = None  # messages its functions may send a minute (None: the default)


@dataclass
class Governor:
    """Admits a tenant's calls within its quotas and budget, on this control plane."""

    clock: Clock
    peers: Callable[[], int] = lambda: 1  # live control planes sharing the quotas
    limits: dict[str, TenantLimits] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    _buckets: LRUCache[str, Bucket] = field(default_factory=lambda: LRUCache(MAX_TENANTS))
    _mail: LRUCache[str, Bucket] = field(default_factory=lambda: LRUCache(MAX_TENANTS))

    def load(self, tenants: Iterable[Tenant]) -> None:
        """Take the tenants' rows."""
        new = {}
        for tenant in tenants:
            name, quotas = tenant.name, tenant.quotas
            q = {k: v for k, v in quotas.items() if v is not None}
            limits = TenantLimits(concurrency=_int(q.get("concurrency")), instances=_int(q.get("instances")),
                                  rps=float(q["rps"]) if "rps" in q else None,
                                  burst=_int(q.get("burst")), over_budget=tenant.over_budget_month,
                                  throttle=tenant.budget_action == "throttle",
                                  mail_per_min=_int(q.get("mail_per_min")))
            if limits != TenantLimits():
                new[name] = limits
        if new != self.limits:
            self._buckets.clear()  # rates changed: start the buckets anew
            self._mail.clear()
        self.limits = new

    def _share(self, value: float) -> float:
        return value / max(1, self.peers())

    def admit(self, tenant: str) -> None:
        """A call of `tenant` may start (then `leave` when it ends), or 429 with the reason."""
        limits = self.limits.get(tenant)
        if limits is None:
            self.in_flight[tenant] = self.in_flight.get(tenant, 0) + 1
            return
        self.check_budget(tenant)
        running = self.in_flight.get(tenant, 0)
        if limits.concurrency is not None:
            share = math.ceil(self._share(limits.concurrency)) if limits.concurrency else 0
            if running >= share:
                raise QuotaExceeded(f"tenant {tenant} has {running} call(s) running, its concurrency quota "
                                    f"of {limits.concurrency}" + self._split(), quota="concurrency",
                                    retry_after_s=1)
        if limits.rps is not None:
            wait = self._bucket(tenant, limits).take(self.clock.now())
            if wait > 0:
                raise QuotaExceeded(f"tenant {tenant} is over its quota of {limits.rps:g} invocations per "
                                    "second" + self._split(), quota="rps", retry_after_s=wait)
        self.in_flight[tenant] = running + 1

    def admit_mail(self, tenant: str, default_per_min: int) -> None:
        """One message of `tenant` may be sent (its quota `mail_per_min`, else `default_per_min`,
        a minute's worth of credit), or 429 QuotaExceeded with when the next one may."""
        limits = self.limits.get(tenant)
        per_min = limits.mail_per_min if limits is not None and limits.mail_per_min is not None \
            else default_per_min
        if per_min <= 0:
            raise QuotaExceeded(f"tenant {tenant} may send no mail (its quota mail_per_min is 0)",
                                quota="mail_per_min", status=403)
        bucket = self._mail.get(tenant)
        if bucket is None or bucket.peers != self.peers() or bucket.rate != self._share(per_min / 60):
            share = max(1.0, math.ceil(self._share(per_min)))
            bucket = self._mail[tenant] = Bucket(self._share(per_min / 60), share, share, self.clock.now(),
                                                 self.peers())
        wait = bucket.take(self.clock.now())
        if wait > 0:
            raise QuotaExceeded(f"tenant {tenant} sent its {per_min} messages of this minute" + self._split(),
                                quota="mail_per_min", retry_after_s=wait)

    def check_budget(self, tenant: str) -> None:
        """BudgetExceeded if the tenant is over its budget with the throttle action (an async call
        is refused at the door then; its rate and concurrency apply when it runs)."""
        limits = self.limits.get(tenant)
        if limits is not None and limits.over_budget and limits.throttle:
            raise BudgetExceeded(f"tenant {tenant} spent its budget for {limits.over_budget}; its calls are "
                                 "refused until the budget is raised or the month ends",
                                 retry_after_s=3600)

    def leave(self, tenant: str) -> None:
        """A call admitted by `admit` ended."""
        left = self.in_flight.get(tenant, 0) - 1
        if left > 0:
            self.in_flight[tenant] = left
        else:
            self.in_flight.pop(tenant, None)

    def _split(self) -> str:
        n = self.peers()
        return f" (this control plane's share: 1/{n})" if n > 1 else ""

    def _bucket(self, tenant: str, limits: TenantLimits) -> Bucket:
        bucket = self._buckets.get(tenant)
        if bucket is None or bucket.peers != self.peers():  # first call, or the share changed
            assert limits.rps is not None
            rate = self._share(limits.rps)
            burst = max(1.0, math.ceil(self._share(limits.burst or max(1.0, limits.rps))))
            bucket = self._buckets[tenant] = Bucket(rate, burst, burst, self.clock.now(), self.peers())
        return bucket

    # -- what bounds the fleet's growth --------------------------------------------------------
    def instance_quota(self, tenant: str) -> int | None:
        """The tenant's instances quota (None: none)."""
        limits = self.limits.get(tenant)
        return None if limits is None else limits.instances

    def blocked(self, tenant: str) -> str | None:
        """Why more capacity must not be made for `tenant` (over budget, throttled or only warned):
        neither its calls nor its minimum instances then make the fleet grow. (Calls over its
        concurrency or rate quota are refused before they wait, so they never ask for capacity; its
        instances quota bounds the starts.)"""
        limits = self.limits.get(tenant)
        if limits is not None and limits.over_budget:
            return f"over its budget for {limits.over_budget}"
        return None


def _int(value: float | int | None) -> int | None:
    return None if value is None else int(value)
