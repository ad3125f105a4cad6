"""Trace-driven simulator: replays a trace through the autoscaler, a keep-alive policy, placement and
fleet scaling over a simulated fleet, minute by minute, and measures cold starts, waste and nodes.

The model, per minute `m` of the trace:

1. Nodes whose boot time has passed become ready.
2. Before the minute's invocations are seen, each function gets the instances its `FunctionBrain`
   (`placement.brain`, the same object the control plane's reconciler decides with) wants
   from what it saw up to `m - 1`: the concurrency of the last minute (Knative's 60 s stable window),
   or, with no load, the keep-alive policy's window (stay warm, pre-warm, or scale to zero).
3. The minute's invocations need `ceil(n * mean duration / 60 s / target)` instances (Little's law,
   at least one). Each instance started now serves a cold start; the rest of the invocations are warm.
   Instances that no node can hold wait for one (still cold) and become pending demand.
4. Wasted memory-time is the loaded instances' memory times the time they are not executing.
5. `scale_fleet` decides; added nodes boot for their type's boot time; drains move instances at once
   (moved instances are started before the old ones stop, so no invocation sees a cold start).

Execution times are the trace's per-function mean; memory is the app's mean allocated memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from placement.autoscale import ScalingPolicy
from placement.brain import FunctionBrain
from placement.fleet import scale_fleet
from placement.fleet_state import (
    FleetNode,
    FleetPolicy,
    FleetState,
    InstanceGroup,
    NodeType,
    UtilizationSample,
)
from placement.keepalive import (
    KeepAlivePolicy,
)
from placement.nodes import NodeState, NodeView
from placement.placing import PlacementRequest, place
from placement.resources import Resources
from placement.routing import instances_to_start
from placement.trace import Trace, load_profile

DEFAULT_NODE_TYPE = NodeType("standard", Resources(4000, 16384), 0.192, 45.0)
SIMULATED_FLEET = FleetPolicy(min_nodes=1, max_nodes=500, max_concurrent_provisions=20)
# The trace gives memory per app process at its observed load, so an instance serves many requests
# at once, like an Azure Functions host (and Knative's default target of 100 per container).
SIMULATED_SCALING = ScalingPolicy(target_concurrency=100.0, max_instances=1000)


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """What to replay a trace with."""

    keep_alive: KeepAlivePolicy
    node_types: tuple[NodeType, ...] = (DEFAULT_NODE_TYPE,)
    fleet: FleetPolicy = SIMULATED_FLEET
    scaling: ScalingPolicy = SIMULATED_SCALING
    cpu_millis_per_gib: int = 250  # trace has no CPU figures: CPU is given in proportion to memory
    initial_nodes: int = 1
    warmup_minutes: int = 0  # replayed but not measured: lets histograms learn before the figures count


@dataclass(frozen=True, slots=True)
class MinuteSample:
    """Fleet-wide figures for one minute, for plots."""

    minute: int
    invocations: int
    cold_starts: int
    instances: int
    nodes: int
    wasted_gb_s: float


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """The figures of one replay."""

    policy: str
    invocations: int
    cold_starts: int
    cold_start_pct: float
    p75_app_cold_start_pct: float
    wasted_memory_gb_s: float
    node_hours: float
    node_cost: float
    peak_nodes: int
    capacity_waits: int  # instance starts that found no room and waited for a node
    timeline: tuple[MinuteSample, ...] = field(repr=False)
    wasted_gb_s_by_app: dict[str, float] = field(default_factory=dict, repr=False, compare=False)
    cold_starts_by_app: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def summary(self) -> dict[str, object]:
        """The headline figures as a JSON-ready dict."""
        return {
            "policy": self.policy,
            "invocations": self.invocations,
            "cold_start_pct": round(self.cold_start_pct, 3),
            "p75_app_cold_start_pct": round(self.p75_app_cold_start_pct, 3),
            "wasted_memory_gb_s": round(self.wasted_memory_gb_s, 1),
            "node_hours": round(self.node_hours, 3),
            "peak_nodes": self.peak_nodes,
        }


class _Node:
    """A simulated node (mutable, private to one replay)."""

    __slots__ = ("alloc", "cached", "id", "instances", "ready_at", "since", "state", "type")

    def __init__(self, node_id: str, node_type: NodeType, ready_at: float) -> None:
        self.id = node_id
        self.type = node_type
        self.ready_at = ready_at
        self.since = ready_at
        self.state = NodeState.PROVISIONING
        self.alloc = Resources.ZERO
        self.instances: dict[str, int] = {}
        self.cached: set[str] = set()

    def view(self) -> NodeView:
        return NodeView(
            self.id, self.type.capacity, self.alloc, self.state, frozenset(self.cached), self.type.name
        )


def percentile(values: list[float], pct: float) -> float:
    """The `pct`-th percentile of `values` (linear interpolation), 0 for none."""
    if not values:
        return 0.0
    s = sorted(values)
    k = (len(s) - 1) * pct / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


class _Replay:
    """One replay's mutable state; `simulate` is its only user."""

    def __init__(self, trace: Trace, config: SimulationConfig) -> None:
        self.trace = trace
        self.config = config
        self.nodes: dict[str, _Node] = {}
        self.seq = 0
        self.res = {
            f.function: Resources(max(10, f.memory_mib * config.cpu_millis_per_gib // 1024), f.memory_mib)
            for f in trace.functions
        }
        self.where: dict[str, dict[str, int]] = {f.function: {} for f in trace.functions}
        self.capacity_waits = 0
        self.utilization: list[UtilizationSample] = []
        self.last_up: float | None = None
        self.last_down: float | None = None

    def new_node(self, node_type: NodeType, ready_at: float) -> _Node:
        self.seq += 1
        n = _Node(f"{node_type.name}-{self.seq}", node_type, ready_at)
        self.nodes[n.id] = n
        return n

    def count(self, fn: str) -> int:
        return sum(self.where[fn].values())

    def start(self, wanted: dict[str, int]) -> dict[str, int]:
        """Start instances (function -> count); return how many of each could not be placed."""
        requests = [PlacementRequest(fn, self.res[fn], k) for fn, k in sorted(wanted.items()) if k > 0]
        if not requests:
            return {}
        decision = place([n.view() for n in self.nodes.values()], requests)
        for a in decision.assignments:
            node = self.nodes[a.node_id]
            node.instances[a.function] = node.instances.get(a.function, 0) + a.count
            node.alloc = node.alloc + self.res[a.function] * a.count
            node.cached.add(a.function)
            self.where[a.function][a.node_id] = self.where[a.function].get(a.node_id, 0) + a.count
        return {u.function: u.count for u in decision.unplaced}

    def stop(self, fn: str, k: int) -> None:
        """Stop `k` instances of `fn`: draining nodes first, then the least-allocated nodes."""
        order = sorted(
            self.where[fn],
            key=lambda i: (self.nodes[i].state is not NodeState.DRAINING, self.nodes[i].alloc.memory_mib, i),
        )
        for node_id in order:
            if k <= 0:
                break
            node = self.nodes[node_id]
            take = min(k, node.instances[fn])
            node.instances[fn] -= take
            node.alloc = node.alloc - self.res[fn] * take
            self.where[fn][node_id] -= take
            if node.instances[fn] == 0:
                del node.instances[fn]
                del self.where[fn][node_id]
            k -= take

    def fleet_step(self, now: float, pending: dict[str, int], busy: set[str]) -> None:
        """Ask `scale_fleet` and carry out its decision."""
        cfg = self.config
        ready = [n for n in self.nodes.values() if n.state is NodeState.READY]
        cap = Resources.ZERO
        alloc = Resources.ZERO
        for n in ready:
            cap, alloc = cap + n.type.capacity, alloc + n.alloc
        self.utilization.append(UtilizationSample(now, alloc, cap))
        horizon = now - cfg.fleet.watermark_window_s - 60
        while self.utilization and self.utilization[0].at < horizon:
            self.utilization.pop(0)
        fleet_nodes = tuple(
            FleetNode(
                n.view(),
                tuple(InstanceGroup(fn, self.res[fn], c) for fn, c in sorted(n.instances.items())),
                sum(c for fn, c in n.instances.items() if fn in busy),
                n.since,
            )
            for n in self.nodes.values()
        )
        state = FleetState(
            fleet_nodes,
            tuple(PlacementRequest(fn, self.res[fn], k) for fn, k in sorted(pending.items())),
            tuple(self.utilization),
            (),
            self.last_up,
            self.last_down,
        )
        decision = scale_fleet(state, cfg.node_types, cfg.fleet, now)
        types = {t.name: t for t in cfg.node_types}
        for add in decision.add:
            for _ in range(add.count):
                self.new_node(types[add.node_type], now + types[add.node_type].boot_s)
            self.last_up = now
        for drain in decision.drain:
            node = self.nodes[drain.node_id]
            node.state, node.since = NodeState.DRAINING, now
            for move in drain.moves:
                self.stop_on(node, move.function, move.count)
                target = self.nodes[move.node_id]
                target.instances[move.function] = target.instances.get(move.function, 0) + move.count
                target.alloc = target.alloc + self.res[move.function] * move.count
                target.cached.add(move.function)
                self.where[move.function][target.id] = (
                    self.where[move.function].get(target.id, 0) + move.count
                )
            self.last_down = now
        for rm in decision.remove:
            node = self.nodes.pop(rm.node_id)
            if node.instances:
                raise AssertionError(f"scale_fleet removed {rm.node_id} with instances: {rm.reason}")
            self.last_down = now

    def stop_on(self, node: _Node, fn: str, k: int) -> None:
        """Stop `k` instances of `fn` on one node."""
        node.instances[fn] -= k
        node.alloc = node.alloc - self.res[fn] * k
        self.where[fn][node.id] -= k
        if node.instances[fn] == 0:
            del node.instances[fn]
            del self.where[fn][node.id]


def simulate(trace: Trace, config: SimulationConfig, *, name: str | None = None) -> SimulationResult:
    """Replay `trace` minute by minute under `config` and measure it."""
    run = _Replay(trace, config)
    for _ in range(config.initial_nodes):
        run.new_node(config.node_types[0], 0.0)
    for n in run.nodes.values():
        n.state = NodeState.READY
    policy = config.keep_alive
    fns = trace.functions
    # The same decision objects the control plane's reconciler uses, one per function.
    brains = {f.function: FunctionBrain(f.function, config.scaling, policy) for f in fns}
    last_active: dict[str, int] = {}
    cold_by_app: dict[str, int] = {}
    waste_by_app: dict[str, float] = {}
    inv_by_app: dict[str, int] = {}
    cold_total = wasted_mib_s = node_minutes = 0.0
    peak_nodes = 0
    cost_minutes = 0.0
    timeline: list[MinuteSample] = []
    profiles = {f.function: load_profile(f.invocations, f.duration_ms) for f in fns}
    target = config.scaling.target_concurrency
    concurrency: dict[str, tuple[float, float]] = {}
    for m in range(trace.minutes):
        now = m * 60.0
        measure = m >= config.warmup_minutes
        minute_waste = 0.0
        concurrency.clear()
        for n in run.nodes.values():
            if n.state is NodeState.PROVISIONING and n.ready_at <= now:
                n.state, n.since = NodeState.READY, now
        # 2. Instances wanted before this minute's invocations are seen.
        grow: dict[str, int] = {}
        for f in fns:
            fn = f.function
            have = run.count(fn)
            brain = brains[fn]
            # Functions with nothing loaded and past their keep-alive window need no decision.
            if fn not in last_active or (
                have == 0 and m - last_active[fn] - 1 > brain.window().loaded_until_s / 60 + 1
            ):
                continue
            d = brain.decide(now, have)
            if d.desired < have:
                run.stop(fn, have - d.desired)
            elif d.desired > have:
                grow[fn] = d.desired - have
        run.capacity_waits += sum(run.start(grow).values())
        # 3. This minute's load: new invocations and those still running from earlier minutes.
        wanted: dict[str, int] = {}
        busy: set[str] = set()
        minute_inv = minute_cold = 0
        for f in fns:
            fn = f.function
            load = profiles[fn].get(m)
            if load is None:
                continue
            peak, mean = load
            busy.add(fn)
            concurrency[fn] = (peak, mean)
            have = run.count(fn)
            k = f.invocations[m]
            # The gateway's decision for calls that find no free slot (`placement.routing`).
            new = instances_to_start(waiting=max(0.0, peak - have * target), starting=0, total=have,
                                     concurrency=target, max_instances=config.scaling.max_instances)
            if new:
                wanted[fn] = new
                cold = min(k, new)
                if measure:
                    cold_by_app[f.app] = cold_by_app.get(f.app, 0) + cold
                minute_cold += cold
            if measure:
                inv_by_app[f.app] = inv_by_app.get(f.app, 0) + k
            minute_inv += k
            # One idle time per idle period: from the end of the last minute the function was busy
            # to this minute's first new invocation (0 when it was busy the minute before). Calls
            # that arrive while it is busy, or a long call still running, end no idle time.
            if k > 0 and fn in last_active and last_active[fn] < m:
                brains[fn].idle_ended((m - last_active[fn] - 1) * 60.0)
            last_active[fn] = m
        pending = run.start(wanted)
        run.capacity_waits += sum(pending.values())
        cold_total += minute_cold if measure else 0
        # 4. Waste: loaded instance-time not spent executing.
        instances = 0
        for f in fns:
            have = run.count(f.function)
            instances += have
            peak, mean = concurrency.get(f.function, (0.0, 0.0))
            if have:
                waste = (have * 60.0 - min(have * 60.0, mean * 60.0)) * f.memory_mib
                minute_waste += waste
                if measure:
                    waste_by_app[f.app] = waste_by_app.get(f.app, 0.0) + waste
            conc = peak
            if have or conc:
                # The minute's last request ends with the minute: keep-alive counts from there.
                brains[f.function].observe(now + 30.0, conc, last_request_at=now + 60.0 if conc else None)
        # 5. The fleet.
        run.fleet_step(now + 60.0, pending, busy)
        count = len(run.nodes)
        if measure:
            wasted_mib_s += minute_waste
            node_minutes += count
            cost_minutes += sum(n.type.hourly_cost for n in run.nodes.values())
            peak_nodes = max(peak_nodes, count)
        timeline.append(MinuteSample(m, minute_inv, minute_cold, instances, count, minute_waste / 1024.0))
    invocations = sum(inv_by_app.values())
    app_pcts = [100.0 * cold_by_app.get(app, 0) / k for app, k in inv_by_app.items() if k > 0]
    return SimulationResult(
        policy=name or policy.name,
        invocations=invocations,
        cold_starts=int(cold_total),
        cold_start_pct=100.0 * cold_total / invocations if invocations else 0.0,
        p75_app_cold_start_pct=percentile(app_pcts, 75),
        wasted_memory_gb_s=wasted_mib_s / 1024.0,
        node_hours=node_minutes / 60.0,
        node_cost=cost_minutes / 60.0,
        peak_nodes=peak_nodes,
        capacity_waits=run.capacity_waits,
        timeline=tuple(timeline),
        wasted_gb_s_by_app={app: w / 1024.0 for app, w in waste_by_app.items()},
        cold_starts_by_app=dict(cold_by_app),
    )


def oracle(trace: Trace, config: SimulationConfig) -> SimulationResult:
    """The floor every policy is read against: each minute, exactly the instances its load needs
    are alive (started ahead, so no cold start; none kept while not needed), packed perfectly onto
    the fewest nodes of the first node type (at least the fleet's minimum)."""
    node = config.node_types[0].capacity
    target = config.scaling.target_concurrency
    profiles = {f.function: load_profile(f.invocations, f.duration_ms) for f in trace.functions}
    waste_by_app: dict[str, float] = {}
    inv_by_app: dict[str, int] = {}
    wasted_mib_s = node_minutes = cost_minutes = 0.0
    peak_nodes = 0
    timeline: list[MinuteSample] = []
    hourly = config.node_types[0].hourly_cost
    for m in range(trace.minutes):
        measure = m >= config.warmup_minutes
        cpu = mem = 0
        instances = minute_inv = 0
        minute_waste = 0.0
        for f in trace.functions:
            minute_inv += f.invocations[m]
            if measure:
                inv_by_app[f.app] = inv_by_app.get(f.app, 0) + f.invocations[m]
            load = profiles[f.function].get(m)
            if load is None:
                continue
            peak, mean = load
            need = min(config.scaling.max_instances, max(1, math.ceil(peak / target - 1e-9)))
            instances += need
            cpu += need * max(10, f.memory_mib * config.cpu_millis_per_gib // 1024)
            mem += need * f.memory_mib
            waste = (need * 60.0 - min(need * 60.0, mean * 60.0)) * f.memory_mib
            minute_waste += waste
            if measure:
                waste_by_app[f.app] = waste_by_app.get(f.app, 0.0) + waste
        nodes = max(config.fleet.min_nodes, math.ceil(max(cpu / node.cpu_millis, mem / node.memory_mib)))
        if measure:
            wasted_mib_s += minute_waste
            node_minutes += nodes
            cost_minutes += nodes * hourly
            peak_nodes = max(peak_nodes, nodes)
        timeline.append(MinuteSample(m, minute_inv, 0, instances, nodes, minute_waste / 1024.0))
    return SimulationResult(
        policy="oracle",
        invocations=sum(inv_by_app.values()),
        cold_starts=0,
        cold_start_pct=0.0,
        p75_app_cold_start_pct=0.0,
        wasted_memory_gb_s=wasted_mib_s / 1024.0,
        node_hours=node_minutes / 60.0,
        node_cost=cost_minutes / 60.0,
        peak_nodes=peak_nodes,
        capacity_waits=0,
        timeline=tuple(timeline),
        wasted_gb_s_by_app={app: w / 1024.0 for app, w in waste_by_app.items()},
        cold_starts_by_app={},
    )
