"""Pure placement decisions: resources, placing instances on nodes, scaling functions and the fleet.

No I/O, no clock reads, no threads: time comes in as an argument, so every decision can be tested
exhaustively and replayed on real traffic by the simulator.
"""

from placement.autoscale import FunctionScaleState, ScaleDecision, ScalingPolicy, scale_function
from placement.fleet import scale_fleet
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
from placement.keepalive import (
    AdaptiveKeepAlive,
    FixedKeepAlive,
    HybridHistogramPolicy,
    IdleTimeHistogram,
    KeepAliveWindow,
    WindowCost,
    keep_alive,
    record_idle,
    window_cost,
)
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
    "AdaptiveKeepAlive",
    "AddNodes",
    "Assignment",
    "DrainNode",
    "FixedKeepAlive",
    "FleetDecision",
    "FleetNode",
    "FleetPolicy",
    "FleetState",
    "FunctionScaleState",
    "HybridHistogramPolicy",
    "IdleTimeHistogram",
    "InstanceGroup",
    "KeepAliveWindow",
    "NodeState",
    "NodeType",
    "NodeView",
    "PlacementDecision",
    "PlacementRequest",
    "ProvisionFailure",
    "RemoveNode",
    "Resources",
    "ScaleDecision",
    "ScalingPolicy",
    "Strategy",
    "Unplaced",
    "UtilizationSample",
    "WindowCost",
    "keep_alive",
    "place",
    "record_idle",
    "scale_fleet",
    "scale_function",
    "window_cost",
]
