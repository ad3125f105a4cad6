"""The fleet: nodes and their heartbeats, joining, the fleet autoscaler loop, the provider and
its node types, and the agent package new nodes install."""

from control_plane.fleet.agent_package import AgentPackage, build_wheel
from control_plane.fleet.autoscaler import FleetAutoscaler
from control_plane.fleet.join import AGENT_PACKAGE_ROUTE, Joins
from control_plane.fleet.nodes import Fleet, Node
from control_plane.fleet.providers import QEMU_NODE_TYPE, build_provider, node_types, qemu_software
from control_plane.fleet.schemas import NodePublic, ResourcesPublic
from control_plane.fleet.workload import Workload

__all__ = [
    "AGENT_PACKAGE_ROUTE",
    "QEMU_NODE_TYPE",
    "AgentPackage",
    "Fleet",
    "FleetAutoscaler",
    "Joins",
    "Node",
    "NodePublic",
    "ResourcesPublic",
    "Workload",
    "build_provider",
    "build_wheel",
    "node_types",
    "qemu_software",
]
