"""When to grow or shrink the fleet, and how: a pure decision a reconciler calls every tick.

Growth, in order: replace nothing (lost nodes are only removed), reach `min_nodes`, then give pending
demand (instances that found no room) the cheapest set of new nodes that holds it, counting the room
that ready and still-booting nodes already offer; with no pending demand, add one node when
utilization has stayed above the high watermark for a whole window. Limits always hold: `max_nodes`,
`max_concurrent_provisions`, a cooldown after growing, and exponential back-off per node type after
failed provisions.

Shrinking, cheapest and safest first, only when utilization has stayed below the low watermark for a
whole window, no demand is pending (the room it waits for may be the very node that looks idle),
nothing is booting or unready (the view is synced), and no cooldown applies: remove
empty nodes; otherwise drain the least-used node whose instances fit on the others (the re-placement
is simulated with `place` and returned as the moves to make). At most one drain at a time, and a node
is removed only when it has neither instances nor in-flight work; a drained node is removed on a later
tick, once empty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from placement.fleet_state import (
    AddNodes,
    DrainNode,
    FleetDecision,
    FleetNode,
    FleetPolicy,
    FleetState,
    InstanceGroup,
    NodeType,
    ProvisionFailure,
    RemoveNode,
    UtilizationSample,
)
from placement.nodes import NodeState, NodeView
from placement.placing import PlacementRequest, place
from placement.resources import Resources

__all__ = [
    "AddNodes",
    "DrainNode",
    "FleetDecision",
    "FleetNode",
    "FleetPolicy",
    "FleetState",
    "InstanceGroup",
    "NodeType",
    "ProvisionFailure",
    "RemoveNode",
    "UtilizationSample",
    "backoff_until",
    "scale_fleet",
]


def backoff_until(failure: ProvisionFailure, policy: FleetPolicy) -> float:
    """When provisioning `failure.node_type` may be tried again."""
    delay = min(
        policy.max_failure_backoff_s, policy.failure_backoff_s * 2.0 ** max(0, failure.consecutive - 1)
    )
    return failure.last_at + delay


def _describe(requests: Sequence[PlacementRequest]) -> str:
    parts = [f"{r.count} instance{'s' if r.count != 1 else ''} of {r.function}" for r in requests[:3]]
    more = sum(r.count for r in requests[3:])
    return ", ".join(parts) + (f" and {more} more" if more else "")


def _leftover(views: Sequence[NodeView], requests: Sequence[PlacementRequest]) -> list[PlacementRequest]:
    """The part of `requests` that `place` cannot fit on `views`."""
    keyed = [replace(r, function=f"{i}\x00{r.function}") for i, r in enumerate(requests) if r.count > 0]
    unplaced = {u.function: u.count for u in place(views, keyed).unplaced}
    return [
        replace(r, function=r.function.split("\x00", 1)[1], count=unplaced[r.function])
        for r in keyed
        if r.function in unplaced
    ]


def _fresh(node_type: NodeType, i: int) -> NodeView:
    return NodeView(
        f"\x00new-{node_type.name}-{i}", node_type.capacity, Resources.ZERO, node_type=node_type.name
    )


def _nodes_needed(node_type: NodeType, requests: Sequence[PlacementRequest], limit: int) -> tuple[int, bool]:
    """Fresh nodes of `node_type` needed for `requests` (at most `limit`), and whether that holds them all."""
    total = Resources.ZERO
    for r in requests:
        total = total + r.resources * r.count
    k = max(1, math.ceil(total.max_share_of(node_type.capacity) - 1e-9))
    while k <= limit:
        if not _leftover([_fresh(node_type, i) for i in range(k)], requests):
            return k, True
        k += 1
    return limit, False


def _window_all(
    samples: Sequence[UtilizationSample], now: float, window: float, above: float | None, below: float | None
) -> tuple[bool, float]:
    """Whether utilization stayed beyond a threshold over the whole window, and its latest value."""
    if not samples or min(s.at for s in samples) > now - window:
        return False, samples[-1].utilization if samples else 0.0
    recent = [s for s in samples if now - window <= s.at <= now]
    if not recent:
        return False, 0.0
    latest = max(recent, key=lambda s: s.at).utilization
    if above is not None:
        return all(s.utilization > above for s in recent), latest
    assert below is not None
    return all(s.utilization < below for s in recent), latest


def _utilization(nodes: Sequence[FleetNode]) -> float:
    alloc = Resources.ZERO
    cap = Resources.ZERO
    for n in nodes:
        alloc = alloc + n.view.allocated
        cap = cap + n.view.capacity
    return alloc.max_share_of(cap) if not cap.is_zero() else (1.0 if not alloc.is_zero() else 0.0)


def _grow(
    state: FleetState,
    types: Sequence[NodeType],
    policy: FleetPolicy,
    now: float,
    live: list[FleetNode],
    notes: list[str],
) -> tuple[list[AddNodes], list[PlacementRequest]]:
    """Additions for min nodes, pending demand and the high watermark; returns them and unmet demand."""
    booting = [n for n in live if n.view.state is NodeState.PROVISIONING]
    slots = min(policy.max_nodes - len(live), policy.max_concurrent_provisions - len(booting))
    blocked = {
        f.node_type: backoff_until(f, policy) for f in state.failures if backoff_until(f, policy) > now
    }
    usable = sorted(
        (t for t in types if t.name not in blocked), key=lambda t: (t.hourly_cost, t.boot_s, t.name)
    )
    for name, until in sorted(blocked.items()):
        notes.append(f"not provisioning {name} for {until - now:.0f} s: backing off after failed provisions")
    adds: list[AddNodes] = []
    new_views: list[NodeView] = []

    def add(t: NodeType, k: int, reason: str) -> None:
        nonlocal slots
        adds.append(AddNodes(t.name, k, reason))
        new_views.extend(_fresh(t, len(new_views) + i) for i in range(k))
        slots -= k

    if len(live) < policy.min_nodes and usable and slots > 0:
        add(
            usable[0],
            min(policy.min_nodes - len(live), slots),
            f"below the minimum of {policy.min_nodes} nodes (have {len(live)})",
        )
    room = [n.view for n in live if n.view.state is NodeState.READY]
    room += [replace(n.view, state=NodeState.READY) for n in booting]
    unmet = _leftover(room + new_views, state.pending)
    if unmet:
        what = _describe(unmet)
        largest = max((r.resources for r in unmet), key=lambda r: (r.memory_mib, r.cpu_millis))
        fits_some = [r for r in unmet if any(r.resources.fits(t.capacity) for t in types)]
        for r in unmet:
            if r not in fits_some:
                notes.append(f"{r.count} instances of {r.function} ({r.resources}) fit no node type")
        if slots <= 0:
            notes.append(
                f"{what} pending but at the limit of {policy.max_nodes} nodes or "
                f"{policy.max_concurrent_provisions} concurrent provisions"
            )
        elif fits_some:
            options = []
            for t in usable:
                fitting = [r for r in fits_some if r.resources.fits(t.capacity)]
                if len(fitting) != len(fits_some):
                    continue
                k, enough = _nodes_needed(t, fitting, slots)
                options.append((not enough, k * t.hourly_cost, k, t.boot_s, t.name, t))
            if not options:  # no single type holds every request: serve the largest first
                big = max(fits_some, key=lambda r: (r.resources.memory_mib, r.resources.cpu_millis))
                for t in usable:
                    if big.resources.fits(t.capacity):
                        k, enough = _nodes_needed(t, [big], slots)
                        options.append((not enough, k * t.hourly_cost, k, t.boot_s, t.name, t))
            if options:
                short, cost, k, _, _, t = min(options)
                add(
                    t,
                    k,
                    f"{what} pending, no ready or booting node fits {largest}; "
                    f"{k} {t.name} (${cost:.3f}/h) is the cheapest fit"
                    + (" (limited by max nodes or concurrent provisions)" if short else ""),
                )
            else:
                notes.append(f"{what} pending but every node type that fits is backing off")
        return adds, unmet
    if adds or booting or not usable or slots <= 0:
        return adds, unmet
    hot, latest = _window_all(state.utilization, now, policy.watermark_window_s, policy.high_watermark, None)
    if hot:
        if state.last_scale_up_at is not None and now - state.last_scale_up_at < policy.scale_up_cooldown_s:
            notes.append(
                f"utilization {latest:.0%} is high but scale-up cooldown runs until "
                f"{state.last_scale_up_at + policy.scale_up_cooldown_s:.0f}"
            )
        else:
            t = min(
                usable, key=lambda t: (t.hourly_cost / max(1, t.capacity.memory_mib), t.hourly_cost, t.name)
            )
            add(
                t,
                1,
                f"utilization {latest:.0%} above the high watermark {policy.high_watermark:.0%} "
                f"for {policy.watermark_window_s / 60:g} min",
            )
    return adds, unmet


def _shrink(
    state: FleetState,
    types: Sequence[NodeType],
    policy: FleetPolicy,
    now: float,
    live: list[FleetNode],
    notes: list[str],
) -> tuple[list[DrainNode], list[RemoveNode]]:
    """Removals of empty nodes, or else one drain of a node whose instances fit elsewhere."""
    cost = {t.name: t.hourly_cost for t in types}
    removes: list[RemoveNode] = []
    count = len(live)
    unsynced = [n.view.id for n in live if n.view.state in (NodeState.PROVISIONING, NodeState.NOT_READY)]
    if unsynced:
        return [], removes  # Shrinking waits until every node is up and reporting.
    draining = [n.view.id for n in live if n.view.state is NodeState.DRAINING and not n.is_empty]
    if draining:
        notes.append(f"not shrinking further while {draining[0]} drains")
        return [], removes
    for last, label in ((state.last_scale_up_at, "growing"), (state.last_scale_down_at, "shrinking")):
        if last is not None and now - last < policy.scale_down_cooldown_s:
            notes.append(
                f"scale-down cooldown after {label}: {policy.scale_down_cooldown_s - (now - last):.0f} s left"
            )
            return [], removes
    cold, latest = _window_all(state.utilization, now, policy.watermark_window_s, None, policy.low_watermark)
    if not cold:
        return [], removes
    why = (
        f"utilization {latest:.0%} below the low watermark {policy.low_watermark:.0%} "
        f"for {policy.watermark_window_s / 60:g} min"
    )
    active = [n for n in live if n.view.state is NodeState.READY]
    # Empty nodes first: most expensive, then newest, go first.
    empties = sorted(
        (n for n in active if n.is_empty),
        key=lambda n: (-cost.get(n.view.node_type, 0.0), -n.since, n.view.id),
    )
    for n in empties:
        rest = [m for m in active if m.view.id != n.view.id]
        if count - 1 < policy.min_nodes or _utilization(rest) > policy.high_watermark:
            break
        removes.append(RemoveNode(n.view.id, f"{n.view.id} is empty; {why}"))
        active = rest
        count -= 1
    if removes or count - 1 < policy.min_nodes:
        return [], removes
    # Then the least-used node whose instances fit on the others: one drain per step.
    candidates = sorted(
        (n for n in active if not n.is_empty),
        key=lambda n: (
            n.view.allocated.max_share_of(n.view.capacity),
            -cost.get(n.view.node_type, 0.0),
            n.view.id,
        ),
    )
    for n in candidates[: policy.max_consolidation_candidates]:
        rest = [m for m in active if m.view.id != n.view.id]
        if _utilization(rest) > policy.high_watermark:
            continue
        moving = [PlacementRequest(g.function, g.resources, g.count) for g in n.instances if g.count > 0]
        decision = place([m.view for m in rest], moving)
        if decision.unplaced:
            continue
        k = sum(r.count for r in moving)
        return [
            DrainNode(
                n.view.id,
                decision.assignments,
                f"drain {n.view.id}: its {k} instance{'s' if k != 1 else ''} "
                f"({_describe(moving)}) fit on other nodes; {why}",
            )
        ], removes
    return [], removes


def scale_fleet(
    state: FleetState, node_types: Sequence[NodeType], policy: FleetPolicy, now: float
) -> FleetDecision:
    """Decide which nodes to add, drain and remove at time `now`. Pure and deterministic."""
    notes: list[str] = []
    nodes = sorted(state.nodes, key=lambda n: n.view.id)
    removes = [
        RemoveNode(n.view.id, f"{n.view.id} is lost: terminate it (gone already is fine)")
        for n in nodes
        if n.view.state is NodeState.LOST
    ]
    live = [n for n in nodes if n.view.state is not NodeState.LOST]
    if len(live) > policy.max_nodes:
        notes.append(f"{len(live)} nodes exceed the maximum of {policy.max_nodes}")
    # Finishing a drain disrupts nothing: a drained node goes as soon as it is empty.
    count = len(live)
    for n in live:
        if n.view.state is NodeState.DRAINING and n.is_empty:
            if count - 1 < policy.min_nodes:
                notes.append(
                    f"{n.view.id} is drained but removing it would go below {policy.min_nodes} nodes"
                )
                continue
            removes.append(
                RemoveNode(n.view.id, f"{n.view.id} is drained: no instances, no requests in flight")
            )
    gone = {r.node_id for r in removes}
    live = [n for n in live if n.view.id not in gone]
    adds, unmet = _grow(state, node_types, policy, now, live, notes)
    drains: list[DrainNode] = []
    waiting = sum(r.count for r in state.pending)
    if waiting:
        # The room that met it (a node that just became ready, say) is about to be used: taking
        # it away now would strand the calls waiting for it.
        notes.append(f"not shrinking while {waiting} instance{'s' if waiting != 1 else ''} wait for a node")
    elif not adds and not unmet:
        drains, more = _shrink(state, node_types, policy, now, live, notes)
        removes += more
    adds, removes = _within_limits(nodes, adds, removes, policy, notes)
    return FleetDecision(tuple(adds), tuple(drains), tuple(removes), tuple(notes))


def _within_limits(nodes: Sequence[FleetNode], adds: list[AddNodes], removes: list[RemoveNode],
                   policy: FleetPolicy, notes: list[str]) -> tuple[list[AddNodes], list[RemoveNode]]:
    """The last word on the limits, whatever the steps above decided together: never remove live
    nodes below `min_nodes`, never add beyond `max_nodes` (nodes being removed still count)."""
    state_of = {n.view.id: n.view.state for n in nodes}
    live = sum(1 for s in state_of.values() if s is not NodeState.LOST)
    floor = min(policy.min_nodes, live)
    kept: list[RemoveNode] = []
    removable = live - floor
    for rm in removes:
        if state_of.get(rm.node_id) is NodeState.LOST:
            kept.append(rm)
        elif removable > 0:
            kept.append(rm)
            removable -= 1
        else:
            notes.append(f"kept {rm.node_id}: removing it would go below {policy.min_nodes} nodes")
    room = max(0, policy.max_nodes - live)
    capped: list[AddNodes] = []
    for add in adds:
        count = min(add.count, room)
        room -= count
        if count:
            capped.append(add if count == add.count else AddNodes(add.node_type, count, add.reason))
        if count < add.count:
            notes.append(f"held back {add.count - count} {add.node_type}: at the maximum of "
                         f"{policy.max_nodes} nodes")
    return capped, kept
