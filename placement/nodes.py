"""Nodes as placement sees them: capacity, what is allocated, and state."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from placement.resources import Resources


class NodeState(StrEnum):
    """Where a node is in its life. Only READY nodes receive new instances."""

    READY = "ready"
    DRAINING = "draining"
    CORDONED = "cordoned"
    NOT_READY = "not_ready"
    LOST = "lost"
    PROVISIONING = "provisioning"


@dataclass(frozen=True, slots=True)
class NodeView:
    """A node's capacity, what is already allocated on it, its state, and the functions it has cached."""

    id: str
    capacity: Resources
    allocated: Resources
    state: NodeState = NodeState.READY
    cached_functions: frozenset[str] = frozenset()  # functions whose image/code the node already holds
    node_type: str = ""

    @property
    def free(self) -> Resources:
        """Capacity not yet allocated (negative dimensions mean the node is over-committed)."""
        return self.capacity - self.allocated
