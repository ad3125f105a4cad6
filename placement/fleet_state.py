"""The inputs and outputs of `scale_fleet`: node types, nodes with their instances, policy, decision."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from placement.nodes import NodeView
from placement.placing import Assignment, PlacementRequest
from placement.resources import Resources


@dataclass(frozen=True, slots=True)
class NodeType:
    """A kind of node that can be provisioned: its capacity, price and boot time, the one
    description that placement decides with and providers create from. `extra` holds what only a
    provider reads (an instance type, a libcloud size, a VM's memory); it takes no part in
    comparisons."""

    name: str
    capacity: Resources
    hourly_cost: float = 0.0
    boot_s: float = 60.0
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class InstanceGroup:
    """`count` instances of `function`, each holding `resources`, on one node."""

    function: str
    resources: Resources
    count: int


@dataclass(frozen=True, slots=True)
class FleetNode:
    """A node with what runs on it: instances, requests in flight, and when it entered its state."""

    view: NodeView
    instances: tuple[InstanceGroup, ...] = ()
    in_flight: int = 0
    since: float = 0.0

    @property
    def is_empty(self) -> bool:
        """No instances and no in-flight work: removing it disrupts nothing."""
        return self.in_flight == 0 and all(g.count == 0 for g in self.instances)


@dataclass(frozen=True, slots=True)
class UtilizationSample:
    """Fleet-wide allocation at time `at` over the capacity of ready nodes."""

    at: float
    allocated: Resources
    capacity: Resources

    @property
    def utilization(self) -> float:
        """The largest share of capacity allocated in any dimension."""
        return self.allocated.max_share_of(self.capacity)


@dataclass(frozen=True, slots=True)
class ProvisionFailure:
    """Provisions of `node_type` failed `consecutive` times in a row, the last at `last_at`."""

    node_type: str
    consecutive: int
    last_at: float


@dataclass(frozen=True, slots=True)
class FleetPolicy:
    """Limits and thresholds of fleet scaling."""

    min_nodes: int = 0
    max_nodes: int = 50
    max_concurrent_provisions: int = 5
    high_watermark: float = 0.8
    low_watermark: float = 0.5
    watermark_window_s: float = 300.0
    scale_up_cooldown_s: float = 120.0  # between watermark-driven additions
    scale_down_cooldown_s: float = 300.0  # after any addition or drain, before shrinking again
    failure_backoff_s: float = 30.0  # doubles with each consecutive failure of a node type
    max_failure_backoff_s: float = 900.0
    max_consolidation_candidates: int = 32


@dataclass(frozen=True, slots=True)
class FleetState:
    """Everything `scale_fleet` looks at. LOST nodes count for nothing; PROVISIONING ones are booting."""

    nodes: tuple[FleetNode, ...]
    pending: tuple[PlacementRequest, ...] = ()
    utilization: tuple[UtilizationSample, ...] = ()
    failures: tuple[ProvisionFailure, ...] = ()
    last_scale_up_at: float | None = None
    last_scale_down_at: float | None = None


@dataclass(frozen=True, slots=True)
class AddNodes:
    """Provision `count` nodes of `node_type`."""

    node_type: str
    count: int
    reason: str


@dataclass(frozen=True, slots=True)
class DrainNode:
    """Stop placing on `node_id` and move its instances as `moves` says; remove it once empty."""

    node_id: str
    moves: tuple[Assignment, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class RemoveNode:
    """Terminate `node_id` (it is empty, or lost)."""

    node_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class FleetDecision:
    """What to add, drain and remove this tick, and notes on what was held back and why."""

    add: tuple[AddNodes, ...] = ()
    drain: tuple[DrainNode, ...] = ()
    remove: tuple[RemoveNode, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def added(self) -> int:
        """Nodes to provision."""
        return sum(a.count for a in self.add)
