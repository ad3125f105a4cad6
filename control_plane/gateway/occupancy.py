"""What the nodes hold, as one control plane sees it: its own instances (from its pools) plus
those other control planes run (HA), as the nodes last reported them.

Placement (the gateway's cold starts) and the fleet autoscaler both count from here, so an instance
is never counted twice nor forgotten by one of them. Read-only but for `mark_full`; runs on the
event loop thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from control_plane.fleet import Fleet
from control_plane.gateway.pools import FunctionPool
from control_plane.identity import FunctionRef
from node_agent import protocol as p
from placement import Resources


class Occupancy:
    """Resources, instances and calls in flight per node."""

    def __init__(self, pools: Mapping[str, FunctionPool], fleet: Fleet, owner: str) -> None:
        self.pools = pools  # the gateway's, by reference
        self.fleet = fleet
        self.owner = owner
        # Nodes that refused a start as full (another control plane placed there first): counted
        # as full until their next heartbeat tells what they really hold.
        self._full_since: dict[str, float] = {}

    def mark_full(self, node_id: str, now: float) -> None:
        """The node refused a start for want of room."""
        self._full_since = {n: self._full_since[n] for n in self._still_full()}
        self._full_since[node_id] = now

    def _still_full(self) -> list[str]:
        """Nodes that refused a start as full and have not reported since."""
        return [node_id for node_id, since in self._full_since.items()
                if (node := self.fleet.nodes.get(node_id)) is not None and node.last_heartbeat <= since]

    def foreign_instances(self) -> Iterator[tuple[str, p.InstanceReport]]:
        """(node id, report) of instances other control planes run, as their nodes report."""
        for node in self.fleet.nodes.values():
            for rep in node.instances:
                if rep.owner != self.owner and rep.state != "stopping":
                    yield node.id, rep

    def allocated(self) -> dict[str, Resources]:
        """Resources held per node by live instances, whoever runs them; a node that refused a
        start as full counts as full until it reports again."""
        out: dict[str, Resources] = {}
        for pool in self.pools.values():
            for inst in pool.all_instances():
                out[inst.node_id] = out.get(inst.node_id, Resources.ZERO) + inst.resources
        for node_id, rep in self.foreign_instances():
            out[node_id] = out.get(node_id, Resources.ZERO) + Resources(rep.cpu_millis, rep.memory_mib)
        for node_id in self._still_full():
            out[node_id] = self.fleet.nodes[node_id].capacity
        return out

    def instances_by_node(self) -> dict[str, list[tuple[str, Resources, int]]]:
        """Per node: (function, resources of one instance, count) of its instances, whoever runs them."""
        out: dict[str, dict[tuple[str, Resources], int]] = {}

        def count(node_id: str, function: str, res: Resources) -> None:
            groups = out.setdefault(node_id, {})
            groups[(function, res)] = groups.get((function, res), 0) + 1

        for pool in self.pools.values():
            for inst in pool.all_instances():
                count(inst.node_id, inst.function, inst.resources)
        for node_id, rep in self.foreign_instances():
            count(node_id, rep.function, Resources(rep.cpu_millis, rep.memory_mib))
        return {node: [(f, r, c) for (f, r), c in groups.items()] for node, groups in out.items()}

    def tenant_instances(self, tenant: str) -> int:
        """Live instances of `tenant`'s functions on the whole fleet, whoever runs them."""
        mine = sum(len(pool.all_instances()) for key, pool in self.pools.items()
                   if FunctionRef.of_key(key).tenant == tenant)
        return mine + sum(1 for _, rep in self.foreign_instances()
                          if FunctionRef.of_key(rep.function).tenant == tenant)

    def in_flight_by_node(self) -> dict[str, int]:
        """Calls in flight per node (other control planes' as of their nodes' last report)."""
        out: dict[str, int] = {}
        for pool in self.pools.values():
            for inst in pool.all_instances():
                out[inst.node_id] = out.get(inst.node_id, 0) + inst.in_flight
        for node_id, rep in self.foreign_instances():
            out[node_id] = out.get(node_id, 0) + rep.in_flight
        return out
