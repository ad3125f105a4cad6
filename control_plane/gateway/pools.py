"""What the gateway knows of each function: its current version and its instances, with their
explicit states (starting -> ready -> stopping)."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field

from control_plane.core import CumulusError
from control_plane.functions import DeployedVersion, FunctionCreate
from placement import Resources


class InstanceState(enum.StrEnum):
    """An instance as the gateway sees it."""

    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"


@dataclass(eq=False)
class Instance:
    """One instance of a function version on a node."""

    id: str
    function: str
    version: int
    node_id: str
    node_url: str
    concurrency: int
    resources: Resources
    state: InstanceState = InstanceState.STARTING
    in_flight: int = 0
    last_used: float = 0.0
    served: int = 0

    @property
    def is_ready(self) -> bool:
        """Accepting invocations."""
        return self.state is InstanceState.READY

    @property
    def invoke_url(self) -> str:
        """The agent's proxy route for this instance."""
        return f"{self.node_url}/v1/instances/{self.id}/invoke"


@dataclass(eq=False)
class FunctionPool:
    """A function's current version and its instances."""

    version: DeployedVersion
    instances: dict[str, Instance] = field(default_factory=dict)
    draining: dict[str, Instance] = field(default_factory=dict)  # older versions, stopped once idle
    cond: asyncio.Condition = field(default_factory=asyncio.Condition)
    waiting: int = 0
    unplaced: int = 0  # instances wanted at the last attempt that no node had room for
    start_failures: int = 0
    last_start_error: CumulusError | None = None
    # What the function's brain (`placement.brain`, in the reconciler) learns from the calls:
    in_flight: int = 0  # calls holding a slot now
    peak: int = 0  # most calls in flight or waiting at once since the reconciler last looked
    idle_since: float | None = None  # when the last call ended with none left running
    idle_periods: list[float] = field(default_factory=list)  # idle times ended by a call, unread

    def take_peak(self) -> int:
        """The peak since the last look, and start the next one from what is in flight now."""
        peak, self.peak = max(self.peak, self.in_flight + self.waiting), self.in_flight + self.waiting
        return peak

    @property
    def config(self) -> FunctionCreate:
        """The current version's settings."""
        return self.version.config

    def live(self) -> list[Instance]:
        """Instances of the current version that are starting or ready."""
        return [i for i in self.instances.values() if i.state is not InstanceState.STOPPING]

    def all_instances(self) -> list[Instance]:
        """Current and draining instances."""
        return [*self.instances.values(), *self.draining.values()]


@dataclass(frozen=True, slots=True)
class InvokeResult:
    """What goes back to the caller."""

    status: int
    headers: dict[str, str]
    body: bytes
