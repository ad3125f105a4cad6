"""How many instances a function needs: a concurrency-based autoscaler in the manner of Knative's KPA.

Each tick the caller records the function's in-flight requests (`with_sample`) and asks
`scale_function` for the desired instance count. Desired = ceil(average concurrency / target per
instance) over a stable window (60 s); a short panic window (6 s) catches bursts: when it asks for at
least `panic_threshold` times the ready instances, the autoscaler panics and, for a stable window,
never scales down. Scale-up and scale-down rates are bounded. With no load, the keep-alive window
(`placement.keepalive`) decides whether one instance stays warm, is pre-warmed, or the function scales
to zero. `min_instances` and `max_instances` bound everything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from placement.keepalive import KeepAliveWindow


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    """A function's autoscaling settings."""

    target_concurrency: float = 1.0  # in-flight requests one instance should serve
    min_instances: int = 0
    max_instances: int = 100
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0  # panic when the panic window wants this many times the ready instances
    max_scale_up_rate: float = 1000.0  # at most ready * rate instances next step
    max_scale_down_rate: float = 2.0  # at least ready / rate instances next step


@dataclass(frozen=True, slots=True)
class ConcurrencySample:
    """In-flight requests of a function (summed over its instances) observed at time `at`."""

    at: float
    in_flight: float


@dataclass(frozen=True, slots=True)
class FunctionScaleState:
    """What the autoscaler remembers about one function between ticks."""

    function: str
    ready_instances: int = 0
    samples: tuple[ConcurrencySample, ...] = ()
    last_request_at: float | None = None  # end of the latest request, for keep-alive
    panic_since: float | None = None  # last time the panic threshold was crossed
    panic_peak: int = 0

    def with_sample(self, at: float, in_flight: float) -> FunctionScaleState:
        """This state with one more concurrency sample (and `last_request_at` moved if there was load)."""
        last = at if in_flight > 0 else self.last_request_at
        return replace(self, samples=(*self.samples, ConcurrencySample(at, in_flight)), last_request_at=last)


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    """How many instances the function should have now, the state to keep, and why."""

    function: str
    desired: int
    state: FunctionScaleState
    panicking: bool
    reason: str


def _average(samples: tuple[ConcurrencySample, ...], since: float) -> float | None:
    window = [s.in_flight for s in samples if s.at > since]
    return sum(window) / len(window) if window else None


def _idle_instances(state: FunctionScaleState, now: float, window: KeepAliveWindow) -> tuple[int, str]:
    """Instances to keep when there is no load, according to the keep-alive window."""
    if state.last_request_at is None:
        return 0, "no requests yet"
    idle = now - state.last_request_at
    if window.loaded_at(idle):
        if window.prewarm_s > 0:
            return 1, f"pre-warmed: idle {idle / 60:.1f} min ({window.reason})"
        return 1, f"kept warm: idle {idle / 60:.1f} min of {window.keep_alive_s / 60:.1f} ({window.reason})"
    if idle < window.prewarm_s:
        return 0, f"unloaded until pre-warm at {window.prewarm_s / 60:.1f} min: idle {idle / 60:.1f} min"
    return 0, f"scaled to zero: idle {idle / 60:.1f} min beyond keep-alive ({window.reason})"


def scale_function(
    state: FunctionScaleState,
    policy: ScalingPolicy,
    now: float,
    keep_alive: KeepAliveWindow | None = None,
) -> ScaleDecision:
    """Desired instances for a function at time `now` (KPA-like; `keep_alive` defaults to 10 minutes)."""
    window = keep_alive or KeepAliveWindow(0.0, 600.0, "fixed keep-alive of 10 min")
    target = max(policy.target_concurrency, 1e-9)
    samples = tuple(s for s in state.samples if s.at > now - policy.stable_window_s and s.at <= now)
    stable = _average(samples, now - policy.stable_window_s) or 0.0
    panic_avg = _average(samples, now - policy.panic_window_s)
    panic_value = stable if panic_avg is None else panic_avg
    want_stable = math.ceil(stable / target - 1e-9)
    want_panic = math.ceil(panic_value / target - 1e-9)
    ready = state.ready_instances

    over_threshold = want_panic / max(1, ready) >= policy.panic_threshold
    # As in Knative, the panic clock restarts each time the threshold is crossed again, and panic ends
    # only after a whole stable window below it.
    panic_since = state.panic_since
    if over_threshold:
        panic_since = now
    elif panic_since is not None and now - panic_since >= policy.stable_window_s:
        panic_since = None
    panicking = panic_since is not None

    if panicking:
        desired = max(want_panic, state.panic_peak, ready)
        reason = (
            f"panic: {panic_value:.1f} in flight over {policy.panic_window_s:g} s wants {want_panic} "
            f"(ready {ready}); not scaling down for {policy.stable_window_s:g} s"
        )
    else:
        desired = want_stable
        reason = f"{stable:.2f} in flight over {policy.stable_window_s:g} s at target {target:g} per instance"
    if desired == 0 and not panicking:
        desired, reason = _idle_instances(state, now, window)

    if ready > 0:
        up_limit = math.ceil(ready * policy.max_scale_up_rate)
        down_limit = math.floor(ready / policy.max_scale_down_rate)
        if desired > up_limit:
            desired, reason = up_limit, f"{reason}; scale-up limited to {up_limit}"
        elif desired < down_limit:
            desired, reason = down_limit, f"{reason}; scale-down limited to {down_limit}"
    if desired < policy.min_instances:
        desired, reason = policy.min_instances, f"{reason}; raised to min {policy.min_instances}"
    if desired > policy.max_instances:
        desired, reason = policy.max_instances, f"{reason}; capped at max {policy.max_instances}"

    next_state = replace(
        state,
        samples=samples,
        panic_since=panic_since,
        panic_peak=max(state.panic_peak, desired) if panicking else 0,
    )
    return ScaleDecision(state.function, desired, next_state, panicking, reason)
