"""Pure placement decisions: resources, placing instances on nodes, scaling functions and the fleet.

No I/O, no clock reads, no threads: time comes in as an argument, so every decision can be tested
exhaustively and replayed on real traffic by the simulator.
"""

from placement.nodes import NodeState, NodeView
from placement.placing import (
    Assignment,
    PlacementDecision,
    PlacementRequest,
    Strategy,
    Unplaced,
    place,
)
from placement.resources import Resources

__all__ = [
    "Assignment",
    "NodeState",
    "NodeView",
    "PlacementDecision",
    "PlacementRequest",
    "Resources",
    "Strategy",
    "Unplaced",
    "place",
]
