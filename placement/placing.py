"""Placing function instances on nodes: best-fit packing (default) or spreading, never over-committing.

The decision is a pure function of its inputs. Packing is best-fit decreasing: the largest requests go
first, each instance onto the ready node whose free memory (then CPU) is the smallest that still fits,
so that nodes fill up and others empty out and can be removed. Nodes that already hold a function's
image and code are tried first, since an instance starts there without a pull. Memory is the primary
key of "best" because serverless functions are sized by memory, and memory cannot be overcommitted.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from placement.nodes import NodeState, NodeView
from placement.resources import Resources


class Strategy(StrEnum):
    """How a request's instances are laid out: packed onto few nodes, or spread across many."""

    PACK = "pack"
    SPREAD = "spread"


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """`count` new instances of `function`, each needing `resources`."""

    function: str
    resources: Resources
    count: int = 1
    strategy: Strategy = Strategy.PACK


@dataclass(frozen=True, slots=True)
class Assignment:
    """Start `count` instances of `function` on node `node_id`."""

    function: str
    node_id: str
    count: int


@dataclass(frozen=True, slots=True)
class Unplaced:
    """`count` instances of `function` that could not be placed, and why."""

    function: str
    count: int
    reason: str


@dataclass(frozen=True, slots=True)
class PlacementDecision:
    """What to start where, and what could not be placed."""

    assignments: tuple[Assignment, ...]
    unplaced: tuple[Unplaced, ...]

    def placed_count(self, function: str | None = None) -> int:
        """Instances placed, of one function or of all."""
        return sum(a.count for a in self.assignments if function is None or a.function == function)

    def unplaced_count(self, function: str | None = None) -> int:
        """Instances left unplaced, of one function or of all."""
        return sum(u.count for u in self.unplaced if function is None or u.function == function)


class _Free:
    """Mutable free space of the ready nodes, kept sorted by (free memory, free CPU, id) for best fit."""

    __slots__ = ("cpu", "keys", "mem")

    def __init__(self, nodes: Sequence[NodeView]) -> None:
        self.mem: dict[str, int] = {}
        self.cpu: dict[str, int] = {}
        for n in nodes:
            free = n.free
            self.mem[n.id] = free.memory_mib
            self.cpu[n.id] = free.cpu_millis
        self.keys: list[tuple[int, int, str]] = sorted((self.mem[i], self.cpu[i], i) for i in self.mem)

    def fits(self, node_id: str, need: Resources) -> int:
        """How many instances of `need` fit on the node now."""
        return need.count_in(Resources(self.cpu[node_id], self.mem[node_id]))

    def take(self, node_id: str, need: Resources, count: int) -> None:
        """Allocate `count` instances of `need` on the node, keeping the sort order."""
        old = (self.mem[node_id], self.cpu[node_id], node_id)
        del self.keys[bisect.bisect_left(self.keys, old)]
        self.mem[node_id] -= need.memory_mib * count
        self.cpu[node_id] -= need.cpu_millis * count
        bisect.insort(self.keys, (self.mem[node_id], self.cpu[node_id], node_id))

    def best_fit(self, need: Resources, among: Sequence[str] | None = None) -> str | None:
        """The node with the least free memory (then CPU) that still fits one instance, or None."""
        if among is not None:
            best: tuple[int, int, str] | None = None
            for i in among:
                key = (self.mem[i], self.cpu[i], i)
                if (
                    self.mem[i] >= need.memory_mib
                    and self.cpu[i] >= need.cpu_millis
                    and (best is None or key < best)
                ):
                    best = key
            return best[2] if best is not None else None
        start = bisect.bisect_left(self.keys, (need.memory_mib, -(2**62), ""))
        for mem, cpu, node_id in self.keys[start:]:
            if cpu >= need.cpu_millis and mem >= need.memory_mib:
                return node_id
        return None


def _unplaced_reason(
    request: PlacementRequest, remaining: int, ready: Sequence[NodeView], free: _Free
) -> str:
    """Say why `remaining` instances of the request found no node."""
    need = request.resources
    what = f"{remaining} instance{'s' if remaining != 1 else ''} of {request.function} ({need})"
    if not ready:
        return f"{what}: no ready node"
    if not any(need.fits(n.capacity) for n in ready):
        biggest = max(ready, key=lambda n: (n.capacity.memory_mib, n.capacity.cpu_millis, n.id))
        return f"{what}: larger than any ready node (largest is {biggest.id} with {biggest.capacity})"
    roomiest = max(free.keys)
    return (
        f"{what}: no ready node has room (most free: {roomiest[2]} with "
        f"{Resources(roomiest[1], roomiest[0])})"
    )


def _pack(
    request: PlacementRequest, free: _Free, cached: Sequence[str], out: dict[tuple[str, str], int]
) -> int:
    """Place the request best-fit, cached nodes first; return how many were placed."""
    need = request.resources
    left = request.count
    for among in (cached, None):
        while left > 0:
            node_id = free.best_fit(need, among)
            if node_id is None:
                break
            n = min(left, free.fits(node_id, need))
            free.take(node_id, need, n)
            out[(request.function, node_id)] = out.get((request.function, node_id), 0) + n
            left -= n
    return request.count - left


def _spread(
    request: PlacementRequest,
    free: _Free,
    cached_set: frozenset[str],
    existing: Mapping[str, int],
    out: dict[tuple[str, str], int],
) -> int:
    """Place instances one by one on the node with the fewest of this function, cached and roomiest first."""
    need = request.resources
    heap = [
        (existing.get(i, 0), i not in cached_set, -free.mem[i], -free.cpu[i], i)
        for i in free.mem
        if free.fits(i, need) > 0
    ]
    heapq.heapify(heap)
    placed = 0
    while placed < request.count and heap:
        have, not_cached, _, _, node_id = heapq.heappop(heap)
        free.take(node_id, need, 1)
        out[(request.function, node_id)] = out.get((request.function, node_id), 0) + 1
        placed += 1
        if free.fits(node_id, need) > 0:
            heapq.heappush(heap, (have + 1, not_cached, -free.mem[node_id], -free.cpu[node_id], node_id))
    return placed


def place(
    nodes: Sequence[NodeView],
    requests: Sequence[PlacementRequest],
    *,
    existing: Mapping[str, Mapping[str, int]] | None = None,
) -> PlacementDecision:
    """Decide on which ready nodes to start the requested instances, without over-committing any node.

    `existing` maps function -> node id -> instances already running there (used by SPREAD; their
    resources are already in each node's `allocated`). Only READY nodes receive instances. Requests are
    served largest first (memory, then CPU, then name), so the result does not depend on their order.
    """
    for r in requests:
        if r.count < 0:
            raise ValueError(f"request for {r.function} has a negative count ({r.count})")
        if r.resources.is_negative():
            raise ValueError(f"request for {r.function} has negative resources ({r.resources})")
    ready = sorted((n for n in nodes if n.state is NodeState.READY), key=lambda n: n.id)
    free = _Free(ready)
    cached_by_fn: dict[str, list[str]] = {}
    for n in ready:
        for fn in n.cached_functions:
            cached_by_fn.setdefault(fn, []).append(n.id)
    existing = existing or {}
    out: dict[tuple[str, str], int] = {}
    unplaced: list[Unplaced] = []
    merged: dict[tuple[str, Resources, Strategy], int] = {}
    for r in requests:
        key = (r.function, r.resources, r.strategy)
        merged[key] = merged.get(key, 0) + r.count
    ordered = sorted(
        (PlacementRequest(fn, res, count, strat) for (fn, res, strat), count in merged.items() if count > 0),
        key=lambda r: (-r.resources.memory_mib, -r.resources.cpu_millis, r.function, r.strategy),
    )
    for r in ordered:
        cached = cached_by_fn.get(r.function, [])
        if r.strategy is Strategy.SPREAD:
            spread_counts = dict(existing.get(r.function, {}))
            for (fn, node_id), c in out.items():
                if fn == r.function:
                    spread_counts[node_id] = spread_counts.get(node_id, 0) + c
            placed = _spread(r, free, frozenset(cached), spread_counts, out)
        else:
            placed = _pack(r, free, cached, out)
        if placed < r.count:
            left = r.count - placed
            unplaced.append(Unplaced(r.function, left, _unplaced_reason(r, left, ready, free)))
    assignments = tuple(Assignment(fn, node_id, c) for (fn, node_id), c in sorted(out.items()))
    return PlacementDecision(assignments, tuple(unplaced))
