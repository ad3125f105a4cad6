"""One function's instance decisions, shared by the control plane's reconciler and the simulator.

A `FunctionBrain` holds what the decisions need between ticks — the autoscaler's concurrency samples
and panic state (`FunctionScaleState`), the function's idle-time history (`IdleTimeHistogram`) and
its current keep-alive window — and makes every decision with the pure functions of this package:
`scale_function` (how many instances: concurrency over stable and panic windows, min/max, scale to
zero), `keep_alive` (when the last idle instance stops, and when one is pre-warmed ahead of a
predicted call) and `record_idle`. The control plane feeds it real time (its reconcile ticks, the
gateway's idle periods); the simulator feeds it a trace minute by minute. Either way the same objects
decide, so a change to a policy changes both.

It keeps state, but no clock and no I/O: the caller passes time in.
"""

from __future__ import annotations

import re
from dataclasses import replace

from placement.autoscale import FunctionScaleState, ScaleDecision, ScalingPolicy, scale_function
from placement.keepalive import (
    AdaptiveKeepAlive,
    FixedKeepAlive,
    IdleTimeHistogram,
    KeepAlivePolicy,
    KeepAliveWindow,
    keep_alive,
    record_idle,
)

_FIXED = re.compile(r"^fixed:(\d+(?:\.\d+)?)$")


def parse_keep_alive(spec: str) -> KeepAlivePolicy:
    """`fixed:<seconds>` or `adaptive` (the budgeted histogram policy, 10-minute baseline); ValueError
    with the accepted forms otherwise."""
    spec = spec.strip()
    if spec == "adaptive":
        return AdaptiveKeepAlive()
    match = _FIXED.match(spec)
    if match is None:
        raise ValueError(f"keep_alive {spec!r} is neither 'fixed:<seconds>' nor 'adaptive'")
    return FixedKeepAlive(float(match.group(1)))


def keep_alive_spec(policy: KeepAlivePolicy) -> str:
    """The setting that `parse_keep_alive` reads back into `policy`."""
    if isinstance(policy, FixedKeepAlive):
        return f"fixed:{policy.keep_alive_s:g}"
    return policy.name


def baseline_s(policy: KeepAlivePolicy) -> float:
    """The keep-alive a policy starts from: the fixed time, or the adaptive policy's baseline."""
    if isinstance(policy, FixedKeepAlive):
        return policy.keep_alive_s
    if isinstance(policy, AdaptiveKeepAlive):
        return policy.baseline_s
    return policy.range_s


class FunctionBrain:
    """The instance decisions of one function (see the module docstring)."""

    def __init__(self, function: str, scaling: ScalingPolicy, policy: KeepAlivePolicy) -> None:
        self.function = function
        self.scaling = scaling
        self.policy = policy
        self.state = FunctionScaleState(function)
        self.history = IdleTimeHistogram()
        self._window: KeepAliveWindow | None = None

    def observe(self, at: float, in_flight: float, *, last_request_at: float | None = None) -> None:
        """One concurrency sample (the peak of calls in flight since the last one); a sample with
        load moves the end of the latest request to `at`, or to `last_request_at` when the caller
        knows it better."""
        state = self.state.with_sample(at, in_flight)
        if last_request_at is not None:
            state = replace(state, last_request_at=last_request_at)
        self.state = state

    def idle_ended(self, idle_s: float) -> None:
        """A call arrived after `idle_s` with none running: one more idle time for the history."""
        history = record_idle(self.history, idle_s, self.policy)
        if history is not self.history:
            self.history = history
            self._window = None  # decided again from the new history

    def window(self) -> KeepAliveWindow:
        """The keep-alive window after the latest call (computed once per history)."""
        if self._window is None:
            self._window = keep_alive(self.policy, self.history)
        return self._window

    def decide(self, now: float, ready: int) -> ScaleDecision:
        """How many instances the function should have at `now`, with `ready` of them loaded."""
        state = replace(self.state, ready_instances=ready)
        decision = scale_function(state, self.scaling, now, self.window())
        self.state = decision.state
        return decision

    def reconfigure(self, scaling: ScalingPolicy, policy: KeepAlivePolicy) -> None:
        """New settings (a redeploy): the samples stay; a new keep-alive policy starts its history
        again."""
        self.scaling = scaling
        if policy != self.policy:
            self.policy = policy
            self.history = IdleTimeHistogram()
            self._window = None
