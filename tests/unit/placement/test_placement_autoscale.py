"""scale_function: KPA-like stable and panic windows, rate limits, bounds, keep-alive."""

from placement.autoscale import FunctionScaleState, ScalingPolicy, scale_function
from placement.keepalive import KeepAliveWindow

POLICY = ScalingPolicy(target_concurrency=10, max_instances=20, max_scale_down_rate=1000)


def state_with(
    samples: list[tuple[float, float]], ready: int, last: float | None = None
) -> FunctionScaleState:
    st = FunctionScaleState("f", ready)
    for at, c in samples:
        st = st.with_sample(at, c)
    return st if last is None else FunctionScaleState("f", ready, st.samples, last)


def test_stable_window_average_over_target() -> None:
    st = state_with([(t, 35.0) for t in range(1, 60)], ready=4)
    d = scale_function(st, POLICY, now=60)
    assert d.desired == 4
    assert not d.panicking
    assert "in flight" in d.reason


def test_panic_on_burst_and_no_scale_down_while_panicking() -> None:
    st = state_with([(t, 10.0) for t in range(1, 55)] + [(t, 100.0) for t in range(55, 61)], ready=1)
    d = scale_function(st, POLICY, now=60)
    assert d.panicking
    assert d.desired == 10
    assert d.reason.startswith("panic")
    # Load drops: still panicking within the stable window, so no scale-down.
    later = d.state
    for t in range(61, 91):
        later = later.with_sample(t, 5.0)
    d2 = scale_function(
        FunctionScaleState(
            "f", 10, later.samples, later.last_request_at, later.panic_since, later.panic_peak
        ),
        POLICY,
        now=90,
    )
    assert d2.panicking and d2.desired == 10
    # A whole stable window below the threshold ends the panic.
    for t in range(91, 200):
        later = later.with_sample(t, 5.0)
    d3 = scale_function(
        FunctionScaleState("f", 10, later.samples, 199, d2.state.panic_since, d2.state.panic_peak),
        POLICY,
        now=200,
    )
    assert not d3.panicking and d3.desired == 1


def test_bounds_and_rate_limits() -> None:
    st = state_with([(t, 1000.0) for t in range(1, 61)], ready=20)
    assert scale_function(st, POLICY, now=60).desired == 20  # max
    slow = ScalingPolicy(target_concurrency=1, max_scale_down_rate=2.0)
    st = state_with([(t, 1.0) for t in range(1, 61)], ready=10)
    d = scale_function(st, slow, now=60)
    assert d.desired == 5 and "scale-down limited" in d.reason
    st = state_with([], ready=0)
    d = scale_function(st, ScalingPolicy(min_instances=2), now=60)
    assert d.desired == 2 and "min" in d.reason


def test_keep_alive_then_scale_to_zero() -> None:
    window = KeepAliveWindow(0.0, 600.0, "fixed")
    st = state_with([], ready=1, last=1000.0)
    assert scale_function(st, POLICY, now=1300, keep_alive=window).desired == 1
    d = scale_function(st, POLICY, now=1700, keep_alive=window)
    assert d.desired == 0 and d.reason.startswith("scaled to zero")


def test_pre_warm_window() -> None:
    window = KeepAliveWindow(300.0, 120.0, "histogram")
    st = state_with([], ready=0, last=0.0)
    assert scale_function(st, POLICY, now=100, keep_alive=window).desired == 0
    d = scale_function(st, POLICY, now=330, keep_alive=window)
    assert d.desired == 1 and d.reason.startswith("pre-warmed")
    assert scale_function(st, POLICY, now=500, keep_alive=window).desired == 0


def test_no_requests_yet_means_zero() -> None:
    d = scale_function(FunctionScaleState("f"), POLICY, now=0)
    assert d.desired == 0 and d.reason == "no requests yet"


def test_old_samples_are_dropped() -> None:
    st = state_with([(t, 50.0) for t in range(0, 300)], ready=5)
    d = scale_function(st, POLICY, now=300)
    assert all(s.at > 240 for s in d.state.samples)
