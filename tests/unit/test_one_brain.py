"""One brain: the reconciler decides a function's instances with `placement.brain.FunctionBrain`, the
object the simulator replays traces through. Pure decisions on request/decision types first, then
the product's loop on a manual clock (real SQLite store, a scripted agent), then both together."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import unit_functions, unit_gateway

from control_plane.core import ManualClock
from control_plane.fleet import Fleet
from control_plane.functions import DeployedVersion, FunctionCreate
from control_plane.gateway import Instance, StartAnswer
from control_plane.reconcile import Reconciler
from control_plane.reconcile.reconciler import scaling_policy
from control_plane.store import Store
from control_plane.telemetry import Telemetry
from node_agent import protocol as p
from node_agent.protocol import Heartbeat
from placement import AdaptiveKeepAlive, FixedKeepAlive, ScalingPolicy
from placement.brain import FunctionBrain, keep_alive_spec, parse_keep_alive
from placement.simulator import SimulationConfig, simulate
from placement.trace import Trace, TraceFunction

# -- the decisions, pure -----------------------------------------------------------------------


def test_keep_alive_settings_parse_and_round_trip() -> None:
    assert parse_keep_alive("fixed:30") == FixedKeepAlive(30.0)
    assert parse_keep_alive("adaptive") == AdaptiveKeepAlive()
    assert keep_alive_spec(parse_keep_alive("fixed:12.5")) == "fixed:12.5"
    for bad in ("fixed", "fixed:-1", "forever", "adaptive:3"):
        with pytest.raises(ValueError, match="fixed:<seconds>"):
            parse_keep_alive(bad)


def test_a_fixed_keep_alive_keeps_one_instance_then_scales_to_zero() -> None:
    brain = FunctionBrain("f", ScalingPolicy(stable_window_s=10, panic_window_s=1), FixedKeepAlive(30))
    brain.observe(0.0, 3)
    assert brain.decide(0.5, 0).desired == 3  # three calls at once: three instances
    for t in range(1, 12):
        brain.observe(float(t), 0)
    d = brain.decide(12.0, 3)  # the window has no load any more: one stays warm (rate-limited down)
    assert d.desired == 1 and "kept warm" in d.reason
    brain.observe(31.0, 0)
    d = brain.decide(31.0, 1)
    assert d.desired == 0 and "scaled to zero" in d.reason


def test_an_adaptive_keep_alive_learns_a_periodic_function_and_pre_warms_it() -> None:
    brain = FunctionBrain("cron", ScalingPolicy(stable_window_s=60, panic_window_s=6), AdaptiveKeepAlive())
    assert "learning" in brain.window().reason
    for _ in range(10):
        brain.idle_ended(20 * 60.0)  # called every 20 minutes
    window = brain.window()
    assert window.prewarm_s > 0 and window.loaded_until_s < 25 * 60, window
    brain.observe(0.0, 1)
    brain.observe(60.0, 0)
    assert brain.decide(120.0, 1).desired == 0  # unloaded right after the call...
    assert brain.decide(window.prewarm_s + 1, 0).desired == 1  # ...and pre-warmed before the next


# -- the product's loop ------------------------------------------------------------------------


@dataclass
class InstantAgents:
    """An agent client whose starts and stops succeed at once."""

    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def start(self, inst: Instance, request: p.InstanceStart) -> StartAnswer:
        self.started.append(inst.id)
        return StartAnswer(200)

    async def stop(self, inst: Instance) -> None:
        self.stopped.append(inst.id)

    async def invoke(self, inst: Instance, body: bytes, *, request_id: str,
                     timeout_s: float, cold: bool = False) -> tuple[Mapping[str, str], bytes]:
        return {p.OUTCOME_HEADER: p.OK, p.LOG_BYTES_HEADER: "0", p.DURATION_HEADER: "1"}, body


async def _loop(tmp_path: Path, **config: object) -> tuple[Reconciler, InstantAgents, ManualClock]:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    clock = ManualClock()
    fleet = Fleet(store, clock, heartbeat_interval_s=1000, lost_after_s=10_000)
    await fleet.heartbeat(Heartbeat(node_id="n1", url="http://127.0.0.1:9", cpu_millis=8000, memory_mib=8192))
    agents = InstantAgents()
    gateway = unit_gateway(store, fleet, clock, tmp_path, agents=agents)
    gateway.set_version(DeployedVersion("f", 1, "d" * 64, 1, FunctionCreate(name="f", **config)))  # type: ignore[arg-type]
    rec = Reconciler(gateway, fleet, store, unit_functions(store, tmp_path), clock, autoscaler=None,
                     telemetry=Telemetry(store, log_retention=10))
    return rec, agents, clock


async def _settle(rec: Reconciler) -> None:
    """Let the starts and stops the loop asked for finish (their intents are written in threads)."""
    await asyncio.wait_for(rec.gateway.tasks.wait(), 10)


def test_the_reconciler_scales_a_burst_down_after_the_stable_window_and_to_zero_after_keep_alive(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        rec, agents, clock = await _loop(tmp_path, keep_alive_s=30, max_instances=5)
        gateway = rec.gateway
        pool = await gateway.pool("f")
        held = await asyncio.gather(*(gateway.acquire(pool) for _ in range(4)))  # 4 calls at once
        assert len(agents.started) == 4  # the gateway started them for the waiting calls
        for inst, _ in held:
            await gateway.release(pool, inst)
        await rec.act()  # the brain saw a peak of 4 calls
        assert len(pool.live()) == 4
        for _ in range(40):  # no more calls: the stable window (30 s) empties, rates limit the fall
            clock.advance(1)
            await rec.act()
            await _settle(rec)
        assert len(pool.live()) == 0 and len(agents.stopped) == 4
        assert isinstance(rec.brains["f"], FunctionBrain)

    asyncio.run(scenario())


def test_the_reconciler_keeps_min_instances_from_the_same_decision(tmp_path: Path) -> None:
    async def scenario() -> None:
        rec, agents, clock = await _loop(tmp_path, min_instances=2, keep_alive_s=5)
        for _ in range(3):
            await rec.act()
            await _settle(rec)
            clock.advance(10)
        assert len(agents.started) == 2 and not agents.stopped
        assert scaling_policy(FunctionCreate(name="f", min_instances=2), leader=False).min_instances == 0

    asyncio.run(scenario())


def test_the_reconciler_pre_warms_an_adaptive_function_before_its_predicted_call(tmp_path: Path) -> None:
    async def scenario() -> None:
        rec, agents, clock = await _loop(tmp_path, keep_alive="adaptive")
        gateway = rec.gateway
        pool = await gateway.pool("f")
        for _ in range(8):  # one call every 20 minutes: the gateway measures the idle times
            await gateway.invoke("f", b"{}")
            await rec.act()
            for _ in range(20):
                clock.advance(60)
                await rec.act()
                await _settle(rec)
        window = rec.brains["f"].window()
        assert window.prewarm_s > 0, window
        # After the latest call: unloaded in the gap, loaded again before the next call is due.
        await gateway.invoke("f", b"{}")
        await rec.act()
        clock.advance(120)
        await rec.act()
        await _settle(rec)
        assert not pool.live()
        started = len(agents.started)
        clock.advance(window.prewarm_s - 120 + 30)
        await rec.act()
        await _settle(rec)
        assert len(pool.live()) == 1 and len(agents.started) == started + 1  # pre-warmed
        _, cold = await gateway.acquire(pool)
        assert not cold  # the predicted call finds it warm

    asyncio.run(scenario())


# -- both --------------------------------------------------------------------------------------


def test_the_product_loop_and_the_simulator_decide_through_the_same_policy_object(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []
    original = FunctionBrain.decide

    def spy(self: FunctionBrain, now: float, ready: int) -> object:
        seen.append((self.function, type(self.policy).__name__))
        return original(self, now, ready)

    monkeypatch.setattr(FunctionBrain, "decide", spy)
    fn = TraceFunction(function="sim", app="a", invocations=(3, 0, 1, 0, 0), duration_ms=100.0,
                       memory_mib=128)
    trace = Trace(functions=(fn,), minutes=5)
    simulate(trace, SimulationConfig(keep_alive=AdaptiveKeepAlive()))

    async def product() -> None:
        rec, _, _ = await _loop(tmp_path, keep_alive="adaptive")
        await rec.gateway.invoke("f", b"{}")
        await rec.act()

    asyncio.run(product())
    assert ("sim", "AdaptiveKeepAlive") in seen and ("f", "AdaptiveKeepAlive") in seen


def test_the_gateway_and_the_simulator_start_instances_for_unserved_calls_with_one_function() -> None:
    import control_plane.gateway.gateway as gateway_module
    import placement.routing
    import placement.simulator as simulator_module

    assert gateway_module.instances_to_start is placement.routing.instances_to_start
    assert simulator_module.instances_to_start is placement.routing.instances_to_start
    # A minute's 0.3 calls in flight with nothing loaded: one instance; 250 at a target of 100 with
    # one loaded: two more; never above max.
    start = placement.routing.instances_to_start
    assert start(waiting=0.3, starting=0, total=0, concurrency=100.0, max_instances=10) == 1
    assert start(waiting=150.0, starting=0, total=1, concurrency=100.0, max_instances=10) == 2
    assert start(waiting=150.0, starting=0, total=1, concurrency=100.0, max_instances=2) == 1
