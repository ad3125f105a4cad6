"""The hot path: the invocation endpoint (raw ASGI), routing to warm instances, function pools,
instance lifecycle through the agent client, stops, and what the nodes hold.

It never imports the store: what it reads and writes durably goes through `GatewayStore`, handed
in by the composition root.
"""

from control_plane.gateway.agents import (
    AgentCallFailed,
    AgentClient,
    AgentUnreachable,
    HttpAgentClient,
    StartAnswer,
)
from control_plane.gateway.asgi import HttpAnswer, InvokeEndpoint, InvokeFastPath, invoked_function
from control_plane.gateway.events import MAX_EVENT_DEPTH, check_event
from control_plane.gateway.gateway import Gateway
from control_plane.gateway.lifecycle import RUNTIMES_ROUTE
from control_plane.gateway.occupancy import Occupancy
from control_plane.gateway.pools import FunctionPool, Instance, InstanceState, InvokeResult
from control_plane.gateway.ports import GatewayStore, InvocationSink
from control_plane.gateway.stops import StopTracker

__all__ = [
    "MAX_EVENT_DEPTH",
    "RUNTIMES_ROUTE",
    "AgentCallFailed",
    "AgentClient",
    "AgentUnreachable",
    "FunctionPool",
    "Gateway",
    "GatewayStore",
    "HttpAgentClient",
    "HttpAnswer",
    "Instance",
    "InstanceState",
    "InvocationSink",
    "InvokeEndpoint",
    "InvokeFastPath",
    "InvokeResult",
    "Occupancy",
    "StartAnswer",
    "StopTracker",
    "check_event",
    "invoked_function",
]
