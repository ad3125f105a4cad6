"""The fleet as the control plane observes it: nodes learned from their agents' heartbeats."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from control_plane.core import Clock
from control_plane.store import REMOVED, NodeRecord, Store
from node_agent.protocol import Heartbeat, InstanceReport
from placement import NodeState, NodeView, Resources

log = logging.getLogger("cumulus.fleet")


@dataclass(eq=False)
class Node:
    """A node and what its agent last said."""

    id: str
    url: str
    provider: str
    node_type: str
    capacity: Resources
    state: NodeState
    last_heartbeat: float
    instances: list[InstanceReport] = field(default_factory=list)
    unknown: list[InstanceReport] = field(default_factory=list)  # reported, but placed by no control plane
    since: float = 0.0  # when it entered its state (clock time)
    request_id: str = ""  # the provision request it joined under, when it joined with a token


class Fleet:
    """Nodes by id, their readiness by heartbeat age (NotReady after 3 missed beats, then Lost)."""

    def __init__(self, store: Store, clock: Clock, *, heartbeat_interval_s: float,
                 lost_after_s: float) -> None:
        self.store = store
        self.clock = clock
        self.not_ready_after_s = heartbeat_interval_s * 3
        self.lost_after_s = lost_after_s
        self.nodes: dict[str, Node] = {}
        self.retired: set[str] = set()  # removed on purpose: late heartbeats must not revive them
        self.joined: dict[str, str] = {}  # node id -> provision request id, from join tokens
        # Stored nodes not heard from since this control plane started: what they run and how much
        # room they have is not known yet.
        self.unheard: set[str] = set()
        self.on_ready: Callable[[], None] | None = None  # new capacity: wake waiting calls
        # Whether a control plane of this cluster placed an instance id on a node (None: any id).
        self.placed_on: Callable[[str, str], bool] | None = None

    def load(self) -> None:
        """Start from the stored nodes, NotReady until each one's agent reports again, each with the
        provision request it joined under (how its provider machine is found)."""
        now = self.clock.now()
        self.joined.update(self.store.joined_requests())
        for rec in self.store.list_nodes(removed=True):
            if rec.state == REMOVED:
                self.retired.add(rec.id)
                continue
            self.nodes[rec.id] = Node(rec.id, rec.url, rec.provider, rec.node_type,
                                      Resources(rec.cpu_millis, rec.memory_mib), NodeState.NOT_READY, now,
                                      since=now, request_id=self.joined.get(rec.id, ""))
            self.unheard.add(rec.id)

    async def heartbeat(self, beat: Heartbeat) -> Node | None:
        """Record a heartbeat; a new or returning node becomes Ready (and is persisted). A node
        removed on purpose stays removed (None)."""
        if beat.node_id in self.retired:
            return None
        now = self.clock.now()
        node = self.nodes.get(beat.node_id)
        changed = node is None or node.state is not NodeState.READY or node.url != beat.url
        if node is None:
            if beat.node_id not in self.joined:  # joined through another control plane (HA)
                self.joined.update(await asyncio.to_thread(self.store.joined_requests, beat.node_id))
            node = Node(beat.node_id, beat.url, beat.provider, beat.node_type,
                        Resources(beat.cpu_millis, beat.memory_mib), NodeState.READY, now, since=now,
                        request_id=self.joined.get(beat.node_id, ""))
            self.nodes[beat.node_id] = node
        self.unheard.discard(beat.node_id)
        node.url = beat.url
        node.capacity = Resources(beat.cpu_millis, beat.memory_mib)
        node.last_heartbeat = now
        if self.placed_on is None:
            node.instances, node.unknown = beat.instances, []
        else:  # a node cannot claim instances no control plane placed on it (they are stopped)
            node.instances = [i for i in beat.instances if self.placed_on(i.instance_id, node.id)]
            node.unknown = [i for i in beat.instances if not self.placed_on(i.instance_id, node.id)]
        if node.state in (NodeState.NOT_READY, NodeState.LOST, NodeState.PROVISIONING):
            node.state = NodeState.READY
            node.since = now
        if changed and node.state is NodeState.READY:
            log.info("event=node_ready node=%s url=%s", node.id, node.url)
            # Before anything awaits: a reconciler tick in between would see the node ready with
            # none of its instances adopted yet, and start others beside them.
            if self.on_ready is not None:
                self.on_ready()
            await asyncio.to_thread(self._persist, node)
        return node

    def _persist(self, node: Node) -> None:
        self.store.upsert_node(NodeRecord(id=node.id, provider=node.provider, node_type=node.node_type,
                                          url=node.url, cpu_millis=node.capacity.cpu_millis,
                                          memory_mib=node.capacity.memory_mib, state=node.state.value,
                                          last_heartbeat=time.time()))

    async def check(self) -> list[Node]:
        """Age every node by its last heartbeat; returns nodes that just became Lost."""
        now = self.clock.now()
        lost = []
        for node in self.nodes.values():
            age = now - node.last_heartbeat
            if node.state in (NodeState.READY, NodeState.DRAINING) and age > self.not_ready_after_s:
                node.state = NodeState.NOT_READY
                node.since = now
                log.warning("event=node_not_ready node=%s silent_s=%.1f", node.id, age)
                await asyncio.to_thread(self.store.set_node_state, node.id, node.state.value)
            if node.state is NodeState.NOT_READY and age > self.lost_after_s:
                node.state = NodeState.LOST
                node.since = now
                log.warning("event=node_lost node=%s silent_s=%.1f", node.id, age)
                await asyncio.to_thread(self.store.set_node_state, node.id, node.state.value)
                self.unheard.discard(node.id)
                lost.append(node)
        return lost

    async def set_state(self, node_id: str, state: NodeState) -> None:
        """Put a node in `state` (e.g. DRAINING: no new placements)."""
        node = self.nodes.get(node_id)
        if node is not None and node.state is not state:
            node.state = state
            node.since = self.clock.now()
            await asyncio.to_thread(self.store.set_node_state, node_id, state.value)

    async def forget(self, node_id: str) -> None:
        """Drop a node (it is being terminated, or is gone); later heartbeats from it are ignored,
        here and (through its tombstone) by every control plane."""
        self.forget_local(node_id)
        await asyncio.to_thread(self.store.delete_node, node_id)

    def forget_local(self, node_id: str) -> None:
        """Drop a node another control plane removed (its tombstone is already stored)."""
        self.retired.add(node_id)
        self.unheard.discard(node_id)
        self.nodes.pop(node_id, None)

    def views(self, allocated: Mapping[str, Resources]) -> list[NodeView]:
        """Placement's view of the nodes, with what the gateway has allocated on each."""
        return [NodeView(id=n.id, capacity=n.capacity, allocated=allocated.get(n.id, Resources.ZERO),
                         state=n.state, node_type=n.node_type) for n in self.nodes.values()]
