"""Keep-alive and pre-warm policies: how long an idle function stays loaded, and when to load it again.

Three policies:

- `FixedKeepAlive`: keep the function loaded for a fixed time after its last invocation (10 minutes,
  like AWS Lambda and OpenWhisk).
- `HybridHistogramPolicy`: the hybrid histogram policy of "Serverless in the Wild" (Shahrad et al.,
  USENIX ATC 2020). Each function's idle times (time between the end of one invocation and the next)
  go into a histogram of 1-minute bins over a range of hours. When the histogram is representative, the
  function is unloaded right after it runs and pre-warmed at the head (5th percentile, minus a 10%
  margin) of its idle-time distribution, then kept alive until the tail (99th percentile, plus 10%).
  When the histogram is not representative (no samples yet, or its bin counts too flat — coefficient of
  variation below a threshold) the policy falls back to a fixed keep-alive of the whole range with no
  pre-warm. When most idle times fall beyond the range, a time-series forecast of the next idle time is
  used instead: the paper uses ARIMA; here, a mean of the recent out-of-range idle times, with the same
  15% window around it.
- `AdaptiveKeepAlive`: the hybrid policy held to a fixed keep-alive's budget: of the windows its
  histogram suggests, the one with the fewest cold starts over the function's own idle times whose
  idle time stays within `budget` times the fixed keep-alive's (see `window_cost`).

A `KeepAliveWindow` is relative to the end of the last invocation: unloaded for `prewarm_s`, then
loaded for `keep_alive_s`. `prewarm_s == 0` means "stay loaded".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True, slots=True)
class KeepAliveWindow:
    """After an invocation ends: stay unloaded for `prewarm_s`, then loaded for `keep_alive_s`."""

    prewarm_s: float
    keep_alive_s: float
    reason: str = ""

    def loaded_at(self, idle_s: float) -> bool:
        """True if the function should be loaded `idle_s` seconds after its last invocation ended."""
        return self.prewarm_s <= idle_s < self.prewarm_s + self.keep_alive_s

    @property
    def loaded_until_s(self) -> float:
        """Idle time after which the function is unloaded for good (until it is invoked again)."""
        return self.prewarm_s + self.keep_alive_s


@dataclass(frozen=True, slots=True)
class FixedKeepAlive:
    """Keep a function loaded for `keep_alive_s` after each invocation; never pre-warm."""

    keep_alive_s: float = 600.0
    name: str = "fixed"


@dataclass(frozen=True, slots=True)
class HybridHistogramPolicy:
    """Parameters of the hybrid histogram policy (defaults are the paper's)."""

    bin_s: float = 60.0
    range_s: float = 4 * 3600.0
    head_percentile: float = 5.0
    tail_percentile: float = 99.0
    margin: float = 0.10
    cv_threshold: float = 2.0
    min_samples: int = 1
    oob_fraction_threshold: float = 0.5
    forecast_margin: float = 0.15
    forecast_history: int = 5
    # Keep-alive while the histogram is not representative; None means the whole range, as in the paper.
    unrepresentative_keep_alive_s: float | None = None
    name: str = "histogram"

    @property
    def bins(self) -> int:
        """Number of histogram bins."""
        return max(1, math.ceil(self.range_s / self.bin_s))


KeepAlivePolicy = Union["FixedKeepAlive", "HybridHistogramPolicy", "AdaptiveKeepAlive"]


@dataclass(frozen=True, slots=True)
class IdleTimeHistogram:
    """A function's idle times: counts per bin, those beyond the range, and the latest out-of-range ones."""

    counts: tuple[int, ...] = ()
    out_of_bounds: int = 0
    recent_oob_s: tuple[float, ...] = ()

    @property
    def total(self) -> int:
        """Idle times recorded, in range or not."""
        return sum(self.counts) + self.out_of_bounds

    def record(self, idle_s: float, policy: HybridHistogramPolicy, times: int = 1) -> IdleTimeHistogram:
        """A new histogram with `times` more idle times of `idle_s`."""
        if times <= 0:
            return self
        counts = self.counts or (0,) * policy.bins
        i = int(max(idle_s, 0.0) // policy.bin_s)
        if i >= len(counts):
            recent = (*self.recent_oob_s, *([idle_s] * min(times, policy.forecast_history)))
            return IdleTimeHistogram(counts, self.out_of_bounds + times, recent[-policy.forecast_history :])
        return IdleTimeHistogram(
            (*counts[:i], counts[i] + times, *counts[i + 1 :]), self.out_of_bounds, self.recent_oob_s
        )

    def percentile_bin(self, pct: float) -> int:
        """Index of the bin holding the `pct`-th percentile of the in-range idle times."""
        n = sum(self.counts)
        if n == 0:
            return 0
        rank = pct / 100.0 * n
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank and c > 0:
                return i
        return len(self.counts) - 1

    def bin_cv(self) -> float:
        """Coefficient of variation of the bin counts (high means concentrated, i.e. predictable)."""
        if not self.counts:
            return 0.0
        n = len(self.counts)
        mean = sum(self.counts) / n
        if mean == 0:
            return 0.0
        var = sum((c - mean) ** 2 for c in self.counts) / n
        return math.sqrt(var) / mean


def keep_alive(policy: KeepAlivePolicy, history: IdleTimeHistogram | None = None) -> KeepAliveWindow:
    """The keep-alive window to apply after a function's latest invocation, given its idle-time history."""
    if isinstance(policy, FixedKeepAlive):
        return KeepAliveWindow(
            0.0, policy.keep_alive_s, f"fixed keep-alive of {policy.keep_alive_s / 60:g} min"
        )
    if isinstance(policy, AdaptiveKeepAlive):
        return _adaptive(policy, history or IdleTimeHistogram())
    h = history or IdleTimeHistogram()
    total = h.total
    if total >= policy.min_samples and total > 0 and h.out_of_bounds / total > policy.oob_fraction_threshold:
        predicted = sum(h.recent_oob_s) / len(h.recent_oob_s)
        prewarm = predicted * (1 - policy.forecast_margin)
        return KeepAliveWindow(
            prewarm,
            predicted * 2 * policy.forecast_margin,
            f"{h.out_of_bounds}/{total} idle times beyond {policy.range_s / 3600:g} h: forecast next idle "
            f"time {predicted / 60:.0f} min, pre-warm at {prewarm / 60:.0f} min",
        )
    cv = h.bin_cv()
    if total < policy.min_samples or sum(h.counts) == 0 or cv < policy.cv_threshold:
        why = f"{total} idle times" if total < policy.min_samples or sum(h.counts) == 0 else f"CV {cv:.2f}"
        fallback = (
            policy.range_s
            if policy.unrepresentative_keep_alive_s is None
            else policy.unrepresentative_keep_alive_s
        )
        return KeepAliveWindow(
            0.0,
            fallback,
            f"histogram not representative ({why}): keep alive {fallback / 60:g} min",
        )
    head = h.percentile_bin(policy.head_percentile) * policy.bin_s
    tail = (h.percentile_bin(policy.tail_percentile) + 1) * policy.bin_s
    prewarm = head * (1 - policy.margin)
    # A head in the first bin means invocations often follow each other within a minute: stay loaded.
    if prewarm < policy.bin_s:
        prewarm = 0.0
    keep = tail * (1 + policy.margin) - prewarm
    return KeepAliveWindow(
        prewarm,
        keep,
        f"idle-time histogram ({total} samples, CV {cv:.1f}): pre-warm at {prewarm / 60:.1f} min, "
        f"keep alive {keep / 60:.1f} min",
    )



@dataclass(frozen=True, slots=True)
class WindowCost:
    """What a keep-alive window would have cost over a function's recorded idle times."""

    cold: int  # idle periods that would have ended in a cold start
    idle_s: float  # loaded-but-idle seconds (per instance; times memory is the wasted memory-time)


class _Replayed:
    """A histogram's idle times ready to price windows in O(1) each (prefix sums over its bins);
    an idle time counts at its bin's start, one beyond the range at the recent ones' mean."""

    def __init__(self, h: IdleTimeHistogram, policy: HybridHistogramPolicy) -> None:
        self.bin_s = policy.bin_s
        self.counts = [0]
        self.seconds = [0.0]
        for i, c in enumerate(h.counts):
            self.counts.append(self.counts[-1] + c)
            self.seconds.append(self.seconds[-1] + c * i * policy.bin_s)
        self.oob = h.out_of_bounds
        self.oob_at = sum(h.recent_oob_s) / len(h.recent_oob_s) if h.recent_oob_s else policy.range_s

    def cost(self, window: KeepAliveWindow) -> WindowCost:
        start, end = window.prewarm_s, window.loaded_until_s
        n = len(self.counts) - 1
        a = min(n, max(0, math.ceil(start / self.bin_s - 1e-9)))
        b = min(n, max(a, math.ceil(end / self.bin_s - 1e-9)))
        total = self.counts[n]
        warm = self.counts[b] - self.counts[a]
        after = total - self.counts[b]
        cold = self.counts[a] + after
        idle = self.seconds[b] - self.seconds[a] - start * warm + after * (end - start)
        if self.oob:
            if start <= self.oob_at < end:
                idle += self.oob * (self.oob_at - start)
            else:
                cold += self.oob
                idle += self.oob * (end - start) if self.oob_at >= end else 0.0
        return WindowCost(cold, idle)


def window_cost(window: KeepAliveWindow, h: IdleTimeHistogram, policy: HybridHistogramPolicy) -> WindowCost:
    """Replay `window` over the idle times of `h`: a call inside the window is warm and paid for
    the time loaded before it; one outside it is cold (and paid for the whole window when after it)."""
    return _Replayed(h, policy).cost(window)


@dataclass(frozen=True, slots=True)
class AdaptiveKeepAlive:
    """The hybrid histogram policy held to a budget: of the windows its histogram suggests (pre-warm
    at a head percentile, unload after a tail percentile, or the paper's own window), the one that
    would have had the fewest cold starts over the function's own idle times *without more idle
    memory-time than a fixed keep-alive of `baseline_s`* — which is always a candidate, and what
    applies until `min_samples` idle times are known."""

    baseline_s: float = 600.0
    histogram: HybridHistogramPolicy = HybridHistogramPolicy()
    # Tuned on the two Azure samples (README, "Placement and scaling"): the fewest cold starts that
    # still cost no more memory-time and node-hours than the baseline on both.
    min_samples: int = 5
    budget: float = 1.5  # idle time allowed, as a multiple of the baseline's on the same idle times
    saving: float = 0.3  # a window as cold as the baseline must save this share of its idle time
    heads: tuple[float, ...] = (0.0, 1.0, 5.0, 10.0, 25.0)  # percentiles; 0: no pre-warm
    tails: tuple[float, ...] = (50.0, 75.0, 90.0, 95.0, 99.0, 100.0)
    name: str = "adaptive"


def _adaptive(policy: AdaptiveKeepAlive, h: IdleTimeHistogram) -> KeepAliveWindow:
    hp = policy.histogram
    baseline = KeepAliveWindow(0.0, policy.baseline_s, f"fixed keep-alive of {policy.baseline_s / 60:g} min")
    if h.total < policy.min_samples:
        return KeepAliveWindow(0.0, policy.baseline_s, f"learning ({h.total} idle times): "
                                                         f"keep alive {policy.baseline_s / 60:g} min")
    candidates = [keep_alive(hp, h)]
    if sum(h.counts):
        ends = [(h.percentile_bin(p) + 1) * hp.bin_s * (1 + hp.margin) for p in policy.tails]
        for head in policy.heads:
            start = h.percentile_bin(head) * hp.bin_s * (1 - hp.margin) if head > 0 else 0.0
            if start < hp.bin_s:
                start = 0.0
            candidates += [KeepAliveWindow(start, end - start) for end in ends if end > start]
    replayed = _Replayed(h, hp)
    base_cost = replayed.cost(baseline)
    budget = base_cost.idle_s * policy.budget + 1e-6
    best, best_cost = baseline, base_cost
    for window in candidates:
        cost = replayed.cost(window)
        if cost.idle_s > budget or (cost.cold, cost.idle_s) >= (best_cost.cold, best_cost.idle_s):
            continue
        if cost.cold >= base_cost.cold and cost.idle_s > base_cost.idle_s * (1 - policy.saving):
            continue  # no fewer cold starts than the baseline, and not enough idle time saved
        best, best_cost = window, cost
    if best is baseline:
        return KeepAliveWindow(0.0, policy.baseline_s, f"{baseline.reason}: no histogram window does "
                               f"better on {h.total} idle times")
    return KeepAliveWindow(best.prewarm_s, best.keep_alive_s,
                           f"idle-time histogram ({h.total} idle times): pre-warm at "
                           f"{best.prewarm_s / 60:.1f} min, keep alive {best.keep_alive_s / 60:.1f} min "
                           f"({best_cost.cold} cold of {h.total} would-be calls, within {policy.budget:g}x "
                           f"a {policy.baseline_s / 60:g}-min keep-alive's idle time)")


def record_idle(history: IdleTimeHistogram, idle_s: float, policy: KeepAlivePolicy) -> IdleTimeHistogram:
    """`history` with one more idle period of `idle_s` (the time from the end of a function's last
    call, with none running, to its next call); a fixed keep-alive keeps no history."""
    if isinstance(policy, AdaptiveKeepAlive):
        return history.record(idle_s, policy.histogram)
    if isinstance(policy, HybridHistogramPolicy):
        return history.record(idle_s, policy)
    return history
