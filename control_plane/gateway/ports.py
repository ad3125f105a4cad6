"""What the gateway needs from the rest of the control plane, as Protocols the composition root
satisfies: the gateway never imports the store, so its hot path cannot grow a database call."""

from __future__ import annotations

from typing import Protocol

from control_plane.functions import DeployedVersion
from control_plane.telemetry import InvocationRecord


class GatewayStore(Protocol):
    """The gateway's few durable reads and writes. Each call blocks (the gateway makes it on a
    thread) and is one transaction."""

    def latest_version(self, name: str) -> DeployedVersion:
        """The function's latest version (FunctionNotFound if there is none); read at a
        function's first call after a start."""
        ...

    def open_instance_intent(self, instance_id: str, *, owner: str, kind: str, function: str,
                             node_id: str, node_url: str) -> None:
        """Write down a start or stop of an instance before the agent is asked (a stop replaces a
        start of the same instance)."""
        ...

    def close_instance_intent(self, instance_id: str, kind: str) -> None:
        """The agent answered: the intent of this kind is done."""
        ...


class InvocationSink(Protocol):
    """Where each invocation's record goes (a buffer written in batches, off the hot path)."""

    def append(self, record: InvocationRecord) -> None:
        """Keep one record; never blocks."""
        ...
