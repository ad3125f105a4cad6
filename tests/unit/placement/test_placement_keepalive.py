"""Keep-alive policies: fixed and the hybrid histogram policy with its fallbacks."""

from placement.keepalive import (
    AdaptiveKeepAlive,
    FixedKeepAlive,
    HybridHistogramPolicy,
    IdleTimeHistogram,
    KeepAliveWindow,
    keep_alive,
    record_idle,
    window_cost,
)

H = HybridHistogramPolicy()


def hist(*idle_minutes: float) -> IdleTimeHistogram:
    h = IdleTimeHistogram()
    for m in idle_minutes:
        h = h.record(m * 60, H)
    return h


def test_fixed_is_ten_minutes() -> None:
    w = keep_alive(FixedKeepAlive())
    assert (w.prewarm_s, w.keep_alive_s) == (0.0, 600.0)
    assert w.loaded_at(599) and not w.loaded_at(600)


def test_histogram_prewarms_at_head_and_keeps_to_tail() -> None:
    w = keep_alive(H, hist(*([30] * 50)))
    # Every idle time is in the 30-minute bin: pre-warm at 27 min, unload after 34.1 min.
    assert abs(w.prewarm_s - 30 * 60 * 0.9) < 1e-6
    assert abs(w.loaded_until_s - 31 * 60 * 1.1) < 1e-6
    assert not w.loaded_at(20 * 60) and w.loaded_at(30 * 60) and not w.loaded_at(40 * 60)
    assert "pre-warm" in w.reason


def test_histogram_with_head_in_first_bin_stays_loaded() -> None:
    w = keep_alive(H, hist(*([0] * 30 + [5] * 5)))
    assert w.prewarm_s == 0.0
    assert abs(w.keep_alive_s - 6 * 60 * 1.1) < 1e-6


def test_not_representative_falls_back_to_range() -> None:
    w = keep_alive(H, IdleTimeHistogram())
    assert (w.prewarm_s, w.keep_alive_s) == (0.0, 4 * 3600.0)
    assert "not representative" in w.reason
    flat = hist(*range(240))  # one idle time per bin: CV 0
    assert keep_alive(H, flat).keep_alive_s == 4 * 3600.0
    w = keep_alive(HybridHistogramPolicy(unrepresentative_keep_alive_s=600), flat)
    assert w.keep_alive_s == 600


def test_out_of_bounds_uses_forecast() -> None:
    w = keep_alive(H, hist(300, 310, 290, 10))
    predicted = (300 + 310 + 290) / 3 * 60
    assert abs(w.prewarm_s - predicted * 0.85) < 1e-6
    assert abs(w.keep_alive_s - predicted * 0.30) < 1e-6
    assert "forecast" in w.reason


def test_record_many_and_percentiles() -> None:
    h = IdleTimeHistogram().record(0, H, times=99).record(10 * 60, H)
    assert h.total == 100
    assert h.percentile_bin(5) == 0 and h.percentile_bin(100) == 10
    assert h.record(0, H, times=0) == h


def test_window_semantics() -> None:
    w = KeepAliveWindow(60.0, 60.0)
    assert [w.loaded_at(t) for t in (0, 59, 60, 119, 120)] == [False, False, True, True, False]


def test_window_cost_replays_the_idle_times() -> None:
    h = hist(0, 5, 5, 30)
    cost = window_cost(KeepAliveWindow(0.0, 600.0), h, H)  # warm at 0 and 5 min; cold at 30
    assert cost.cold == 1 and cost.idle_s == 0 + 300 + 300 + 600
    cost = window_cost(KeepAliveWindow(240.0, 120.0), h, H)  # pre-warm at 4 min, keep 2
    assert cost.cold == 2 and cost.idle_s == 60 + 60 + 120


def test_adaptive_learns_then_keeps_to_a_fixed_keep_alives_budget() -> None:
    policy = AdaptiveKeepAlive()
    learning = keep_alive(policy, hist(30, 30))
    assert (learning.prewarm_s, learning.keep_alive_s) == (0.0, 600.0) and "learning" in learning.reason
    periodic = keep_alive(policy, hist(*([30] * 20)))  # every 30 min: pre-warm instead of 20 cold starts
    assert periodic.prewarm_s > 0 and periodic.loaded_at(30 * 60) and not periodic.loaded_at(10 * 60)
    baseline = KeepAliveWindow(0.0, 600.0)
    h = hist(*([30] * 20))
    assert window_cost(periodic, h, H).idle_s <= policy.budget * window_cost(baseline, h, H).idle_s
    busy = keep_alive(policy, hist(*([0] * 50)))  # back to back: no reason to change
    assert busy.prewarm_s == 0.0 and busy.loaded_at(0)


def test_record_idle_keeps_no_history_for_a_fixed_keep_alive() -> None:
    assert record_idle(IdleTimeHistogram(), 60.0, FixedKeepAlive()) == IdleTimeHistogram()
    assert record_idle(IdleTimeHistogram(), 60.0, AdaptiveKeepAlive()).total == 1
