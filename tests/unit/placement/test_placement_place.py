"""place(): best fit, spread, cache preference, states, reasons, and its invariants."""

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from placement import (
    NodeState,
    NodeView,
    PlacementRequest,
    Resources,
    Strategy,
    place,
)

CAP = Resources(4000, 4096)


def node(i: str, used_mib: int = 0, **kw: object) -> NodeView:
    return NodeView(i, CAP, Resources(0, used_mib), **kw)  # type: ignore[arg-type]


def test_pack_is_best_fit() -> None:
    nodes = [node("a", 0), node("b", 3072), node("c", 2048)]
    d = place(nodes, [PlacementRequest("f", Resources(100, 1024))])
    assert [(a.node_id, a.count) for a in d.assignments] == [("b", 1)]
    assert d.unplaced == ()


def test_pack_fills_one_node_before_the_next() -> None:
    nodes = [node("a"), node("b")]
    d = place(nodes, [PlacementRequest("f", Resources(100, 1024), count=5)])
    assert {a.node_id: a.count for a in d.assignments} == {"a": 4, "b": 1}


def test_prefers_cached_node_even_if_not_best_fit() -> None:
    nodes = [node("a", 0, cached_functions=frozenset({"f"})), node("b", 3072)]
    d = place(nodes, [PlacementRequest("f", Resources(100, 1024))])
    assert [a.node_id for a in d.assignments] == ["a"]


def test_only_ready_nodes() -> None:
    nodes = [
        node("d", state=NodeState.DRAINING),
        node("c", state=NodeState.CORDONED),
        node("p", state=NodeState.PROVISIONING),
        node("r"),
    ]
    d = place(nodes, [PlacementRequest("f", Resources(0, 1024), count=2)])
    assert [a.node_id for a in d.assignments] == ["r"]


def test_unplaced_reasons() -> None:
    d = place([], [PlacementRequest("f", Resources(0, 512), count=2)])
    assert d.unplaced[0].count == 2
    assert "no ready node" in d.unplaced[0].reason
    d = place([node("a")], [PlacementRequest("f", Resources(0, 8192))])
    assert "larger than any ready node" in d.unplaced[0].reason
    d = place([node("a", 3584)], [PlacementRequest("fn-x", Resources(0, 512), count=3)])
    assert d.placed_count() == 1
    assert d.unplaced[0].count == 2
    assert d.unplaced[0].reason.startswith("2 instances of fn-x (0m CPU, 512 MiB): no ready node has room")


def test_spread_uses_existing_counts() -> None:
    nodes = [node("a"), node("b"), node("c")]
    d = place(
        nodes,
        [PlacementRequest("f", Resources(0, 256), count=3, strategy=Strategy.SPREAD)],
        existing={"f": {"a": 2}},
    )
    assert {a.node_id: a.count for a in d.assignments} == {"b": 2, "c": 1} or {
        a.node_id: a.count for a in d.assignments
    } == {"b": 1, "c": 2}


def test_spread_evens_out() -> None:
    nodes = [node(str(i)) for i in range(4)]
    d = place(nodes, [PlacementRequest("f", Resources(0, 256), count=8, strategy=Strategy.SPREAD)])
    assert sorted(a.count for a in d.assignments) == [2, 2, 2, 2]


def test_largest_first_packs_better() -> None:
    # 3072 + 1024 fits one node exactly if the big one goes first whatever the request order.
    reqs = [PlacementRequest("small", Resources(0, 1024)), PlacementRequest("big", Resources(0, 3072))]
    d1 = place([node("a"), node("b")], reqs)
    d2 = place([node("a"), node("b")], list(reversed(reqs)))
    assert d1 == d2
    assert {a.node_id for a in d1.assignments} == {"a"}


node_st = st.builds(
    lambda i, cpu, mem, used_cpu, used_mem, state, cached: NodeView(
        f"n{i}",
        Resources(cpu, mem),
        Resources(min(used_cpu, cpu), min(used_mem, mem)),
        state,
        frozenset(cached),
    ),
    st.integers(0, 30),
    st.integers(0, 8000),
    st.integers(0, 16384),
    st.integers(0, 8000),
    st.integers(0, 16384),
    st.sampled_from(list(NodeState)),
    st.sets(st.sampled_from(["f", "g", "h"])),
)
req_st = st.builds(
    PlacementRequest,
    st.sampled_from(["f", "g", "h", "k"]),
    st.builds(Resources, st.integers(0, 3000), st.integers(0, 6000)),
    st.integers(0, 20),
    st.sampled_from(list(Strategy)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(node_st, max_size=12, unique_by=lambda n: n.id), st.lists(req_st, max_size=6))
def test_never_overcommits_and_accounts_for_everything(
    nodes: list[NodeView], reqs: list[PlacementRequest]
) -> None:
    d = place(nodes, reqs)
    by_id = {n.id: n for n in nodes}
    sizes = {}
    for r in reqs:
        sizes[r.function] = sizes.get(r.function, [])
        sizes[r.function].append(r)
    used: dict[str, Resources] = defaultdict(lambda: Resources.ZERO)
    # Requests with the same function but different sizes are merged by (function, size); check totals.
    for a in d.assignments:
        assert by_id[a.node_id].state is NodeState.READY
        assert a.count > 0
    wanted = sum(r.count for r in reqs)
    assert d.placed_count() + d.unplaced_count() == wanted
    for r in reqs:
        assert d.placed_count(r.function) + d.unplaced_count(r.function) == sum(
            x.count for x in reqs if x.function == r.function
        )
    # Never over-commit: rebuild per-node usage when each function has one size.
    if all(len({x.resources for x in rs}) == 1 for rs in sizes.values()):
        for a in d.assignments:
            used[a.node_id] = used[a.node_id] + sizes[a.function][0].resources * a.count
        for node_id, u in used.items():
            assert u.fits(by_id[node_id].free), (node_id, u, by_id[node_id].free)


@settings(max_examples=100, deadline=None)
@given(st.lists(node_st, max_size=10, unique_by=lambda n: n.id), st.lists(req_st, max_size=5), st.randoms())
def test_deterministic_whatever_the_order(
    nodes: list[NodeView], reqs: list[PlacementRequest], rnd: object
) -> None:
    shuffled_nodes = list(nodes)
    shuffled_reqs = list(reqs)
    rnd.shuffle(shuffled_nodes)  # type: ignore[attr-defined]
    rnd.shuffle(shuffled_reqs)  # type: ignore[attr-defined]
    assert place(nodes, reqs) == place(shuffled_nodes, shuffled_reqs)
