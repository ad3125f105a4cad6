"""scale_fleet: growth for min nodes, pending demand and watermarks; shrinking safely; invariants."""

from hypothesis import given, settings
from hypothesis import strategies as st

from placement import NodeState, NodeView, PlacementRequest, Resources
from placement.fleet import (
    FleetNode,
    FleetPolicy,
    FleetState,
    InstanceGroup,
    NodeType,
    ProvisionFailure,
    UtilizationSample,
    scale_fleet,
)

SMALL = NodeType("small", Resources(2000, 4096), 0.05, 30)
LARGE = NodeType("large", Resources(8000, 16384), 0.25, 60)
TYPES = (SMALL, LARGE)
POLICY = FleetPolicy(min_nodes=0, max_nodes=10, watermark_window_s=300)


def fnode(
    i: str,
    t: NodeType = SMALL,
    used: int = 0,
    state: NodeState = NodeState.READY,
    instances: tuple[InstanceGroup, ...] = (),
    in_flight: int = 0,
) -> FleetNode:
    alloc = Resources(0, used)
    for g in instances:
        alloc = alloc + g.resources * g.count
    return FleetNode(NodeView(i, t.capacity, alloc, state, node_type=t.name), instances, in_flight)


def util(value: float, now: float = 600, window: float = 300) -> tuple[UtilizationSample, ...]:
    cap = Resources(1000, 1000)
    return tuple(
        UtilizationSample(t, Resources(int(value * 1000), int(value * 1000)), cap)
        for t in range(int(now - window - 60), int(now) + 1, 60)
    )


def test_pending_demand_gets_the_cheapest_fit_with_a_reason() -> None:
    state = FleetState((fnode("a", used=4096),), pending=(PlacementRequest("fn-x", Resources(250, 512), 2),))
    d = scale_fleet(state, TYPES, POLICY, now=0)
    assert [(a.node_type, a.count) for a in d.add] == [("small", 1)]
    assert "2 instances of fn-x pending" in d.add[0].reason
    assert "512 MiB" in d.add[0].reason


def test_large_demand_picks_the_type_that_is_cheapest_in_total() -> None:
    state = FleetState((), pending=(PlacementRequest("big", Resources(0, 6000), 1),))
    d = scale_fleet(state, TYPES, POLICY, now=0)
    assert [(a.node_type, a.count) for a in d.add] == [("large", 1)]
    many = FleetState((), pending=(PlacementRequest("f", Resources(0, 2048), 8),))
    d = scale_fleet(many, TYPES, POLICY, now=0)
    assert [(a.node_type, a.count) for a in d.add] == [("small", 4)]  # $0.20/h beats 1 large at $0.25/h


def test_booting_nodes_count_as_room() -> None:
    booting = fnode("b", state=NodeState.PROVISIONING)
    state = FleetState((booting,), pending=(PlacementRequest("f", Resources(0, 1024), 2),))
    assert scale_fleet(state, TYPES, POLICY, now=0).add == ()


def test_limits_max_nodes_and_concurrent_provisions() -> None:
    pending = (PlacementRequest("f", Resources(0, 4096), 50),)
    d = scale_fleet(FleetState((), pending=pending), TYPES, FleetPolicy(max_nodes=3), now=0)
    assert d.added == 3
    d = scale_fleet(FleetState((), pending=pending), TYPES, FleetPolicy(max_concurrent_provisions=2), now=0)
    assert d.added == 2
    full = tuple(fnode(f"n{i}", used=4096) for i in range(10))
    d = scale_fleet(FleetState(full, pending=pending), TYPES, POLICY, now=0)
    assert d.added == 0 and any("limit" in n for n in d.notes)


def test_back_off_after_failures_uses_another_type() -> None:
    pending = (PlacementRequest("f", Resources(0, 1024), 1),)
    failures = (ProvisionFailure("small", 3, last_at=100),)  # 30 s * 2^2 = 120 s: until 220
    d = scale_fleet(FleetState((), pending=pending, failures=failures), TYPES, POLICY, now=150)
    assert [a.node_type for a in d.add] == ["large"]
    assert any("backing off" in n for n in d.notes)
    d = scale_fleet(FleetState((), pending=pending, failures=failures), TYPES, POLICY, now=221)
    assert [a.node_type for a in d.add] == ["small"]


def test_min_nodes() -> None:
    d = scale_fleet(FleetState(()), TYPES, FleetPolicy(min_nodes=2), now=0)
    assert [(a.node_type, a.count) for a in d.add] == [("small", 2)]
    assert "minimum" in d.add[0].reason


def test_high_watermark_grows_once_then_cools_down() -> None:
    nodes = (fnode("a", used=3800),)
    d = scale_fleet(FleetState(nodes, utilization=util(0.9)), TYPES, POLICY, now=600)
    assert d.added == 1 and "high watermark" in d.add[0].reason
    d = scale_fleet(FleetState(nodes, utilization=util(0.9), last_scale_up_at=550), TYPES, POLICY, now=600)
    assert d.added == 0 and any("cooldown" in n for n in d.notes)
    # A window not fully covered by samples decides nothing.
    d = scale_fleet(FleetState(nodes, utilization=util(0.9, window=100)), TYPES, POLICY, now=600)
    assert d.added == 0


def test_shrink_removes_empty_nodes_first() -> None:
    g = InstanceGroup("f", Resources(0, 512), 1)
    nodes = (fnode("a", instances=(g,)), fnode("b"), fnode("c", t=LARGE))
    d = scale_fleet(FleetState(nodes, utilization=util(0.1)), TYPES, POLICY, now=600)
    assert [r.node_id for r in d.remove] == ["c", "b"]  # the expensive one first
    assert d.drain == ()
    assert all("empty" in r.reason for r in d.remove)


def test_shrink_drains_one_node_whose_instances_fit_elsewhere() -> None:
    g = InstanceGroup("f", Resources(100, 512), 2)
    nodes = (
        fnode("a", instances=(g,)),
        fnode("b", instances=(g,), in_flight=1),
        fnode("c", instances=(g, g)),
    )
    d = scale_fleet(FleetState(nodes, utilization=util(0.3)), TYPES, POLICY, now=600)
    assert d.remove == ()
    assert len(d.drain) == 1
    drain = d.drain[0]
    assert drain.node_id in {"a", "b"}
    assert sum(m.count for m in drain.moves) == 2
    assert all(m.node_id != drain.node_id for m in drain.moves)
    assert "fit on other nodes" in drain.reason


def test_drained_node_is_removed_only_when_empty() -> None:
    g = InstanceGroup("f", Resources(0, 512), 1)
    busy = fnode("a", state=NodeState.DRAINING, instances=(g,))
    idle_with_flight = fnode("b", state=NodeState.DRAINING, in_flight=2)
    done = fnode("c", state=NodeState.DRAINING)
    d = scale_fleet(FleetState((busy, idle_with_flight, done, fnode("d", used=1000))), TYPES, POLICY, now=0)
    assert [r.node_id for r in d.remove] == ["c"]


def test_lost_nodes_are_removed_and_not_counted() -> None:
    d = scale_fleet(FleetState((fnode("x", state=NodeState.LOST),)), TYPES, FleetPolicy(min_nodes=1), now=0)
    assert [r.node_id for r in d.remove] == ["x"]
    assert d.added == 1


def test_no_shrink_while_nodes_boot_or_cooldown() -> None:
    nodes = (fnode("a"), fnode("b", state=NodeState.PROVISIONING))
    assert scale_fleet(FleetState(nodes, utilization=util(0.1)), TYPES, POLICY, now=600).remove == ()
    nodes = (fnode("a"), fnode("b"))
    d = scale_fleet(FleetState(nodes, utilization=util(0.1), last_scale_down_at=500), TYPES, POLICY, now=600)
    assert d.remove == () and any("cooldown" in n for n in d.notes)


def test_no_shrink_while_demand_waits_even_if_it_fits() -> None:
    # A node that has just become ready for pending calls looks empty and idle for a moment: it
    # must not be removed before the calls waiting for it are placed there.
    fresh = fnode("a")
    pending = (PlacementRequest("f", Resources(250, 512), 1),)
    d = scale_fleet(FleetState((fresh,), pending=pending, utilization=util(0.0)), TYPES, POLICY, now=600)
    assert d.remove == () and d.drain == () and d.added == 0
    assert any("wait for a node" in n for n in d.notes)
    # Once placed (nothing pending), the usual rules apply.
    d = scale_fleet(FleetState((fresh,), utilization=util(0.0)), TYPES, POLICY, now=600)
    assert [r.node_id for r in d.remove] == ["a"]


# --- properties -------------------------------------------------------------------------------------

group_st = st.builds(
    InstanceGroup,
    st.sampled_from(["f", "g", "h"]),
    st.builds(Resources, st.integers(0, 1000), st.integers(0, 2048)),
    st.integers(0, 3),
)


@st.composite
def fleet_states(draw: st.DrawFn) -> tuple[FleetState, FleetPolicy]:
    n = draw(st.integers(0, 8))
    nodes = []
    for i in range(n):
        t = draw(st.sampled_from(TYPES))
        groups = tuple(draw(st.lists(group_st, max_size=3)))
        alloc = Resources.ZERO
        for g in groups:
            alloc = alloc + g.resources * g.count
        state = draw(st.sampled_from(list(NodeState)))
        nodes.append(
            FleetNode(
                NodeView(f"n{i}", t.capacity, alloc, state, node_type=t.name), groups, draw(st.integers(0, 2))
            )
        )
    pending = tuple(
        draw(
            st.lists(
                st.builds(
                    PlacementRequest,
                    st.sampled_from(["p", "q"]),
                    st.builds(Resources, st.integers(0, 9000), st.integers(0, 20000)),
                    st.integers(0, 6),
                ),
                max_size=3,
            )
        )
    )
    u = draw(st.floats(0, 1.2))
    lo = draw(st.integers(0, 4))
    policy = FleetPolicy(
        min_nodes=lo,
        max_nodes=lo + draw(st.integers(0, 6)),
        max_concurrent_provisions=draw(st.integers(0, 4)),
    )
    return FleetState(tuple(nodes), pending, util(u)), policy


@settings(max_examples=300, deadline=None)
@given(fleet_states())
def test_invariants(case: tuple[FleetState, FleetPolicy]) -> None:
    state, policy = case
    d = scale_fleet(state, TYPES, policy, now=600)
    by_id = {n.view.id: n for n in state.nodes}
    live = [n for n in state.nodes if n.view.state is not NodeState.LOST]
    removed_live = [r for r in d.remove if by_id[r.node_id].view.state is not NodeState.LOST]
    # Never above max nodes (unless already above), never below min (unless already below).
    assert len(live) + d.added <= max(policy.max_nodes, len(live))
    assert len(live) - len(removed_live) >= min(policy.min_nodes, len(live))
    # Nothing disruptive without drain: only lost or empty nodes are removed; one drain at most.
    for r in d.remove:
        n = by_id[r.node_id]
        assert n.view.state is NodeState.LOST or n.is_empty, r
        assert r.reason
    assert len(d.drain) <= 1
    assert not (d.drain and d.add)
    for dr in d.drain:
        assert by_id[dr.node_id].view.state is NodeState.READY
        assert all(
            m.node_id != dr.node_id and by_id[m.node_id].view.state is NodeState.READY for m in dr.moves
        )
    for a in d.add:
        assert a.count > 0 and a.reason
    assert len({r.node_id for r in d.remove}) == len(d.remove)
    # Nothing is taken away while demand waits for room.
    if any(r.count for r in state.pending):
        assert not d.drain
        assert all(by_id[r.node_id].view.state in (NodeState.LOST, NodeState.DRAINING) for r in d.remove)
    # Deterministic, whatever the order of the nodes.
    assert (
        scale_fleet(
            FleetState(tuple(reversed(state.nodes)), state.pending, state.utilization), TYPES, policy, now=600
        )
        == d
    )
