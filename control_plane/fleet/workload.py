"""`Workload`: what the fleet loop needs to know of the instances on the nodes and of the demand
waiting for room. The gateway provides it; the composition root hands it over, so this room never
imports the gateway (which stands on the fleet's nodes)."""

from __future__ import annotations

from typing import Protocol

from placement import PlacementRequest, Resources


class Workload(Protocol):
    """Instances and calls on the nodes (every control plane's, as far as this one knows them),
    and instances that calls wait for and no node has room for.

    Reads are consistent within one event-loop turn; `drain_node` and `forget_node` act at once
    (no new calls go to a drained node's instances; a forgotten node's instances are dropped)."""

    def allocated(self) -> dict[str, Resources]:
        """Resources held per node id."""
        ...

    def instances_by_node(self) -> dict[str, list[tuple[str, Resources, int]]]:
        """Per node id: (function, resources of one instance, count)."""
        ...

    def in_flight_by_node(self) -> dict[str, int]:
        """Calls in flight per node id."""
        ...

    def pending(self) -> list[PlacementRequest]:
        """Instances wanted that no node has room for."""
        ...

    def drain_node(self, node_id: str) -> None:
        """Send no new calls to the node's instances; they stop once idle."""
        ...

    def forget_node(self, node_id: str) -> None:
        """The node is gone: forget its instances."""
        ...

    def room_changed(self) -> None:
        """Capacity came, or will not come: calls waiting for room look again."""
        ...
