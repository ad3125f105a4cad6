"""The `NodeProvider` seam: create, list and terminate the machines node agents run on."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from placement import NodeType

__all__ = [
    "PROGRAMMING_ERRORS",
    "TAG_CLUSTER",
    "TAG_NODE_TYPE",
    "TAG_REQUEST",
    "BootstrapFor",
    "InsufficientCapacityError",
    "NodeBootstrap",
    "NodeProvider",
    "NodeType",
    "ProviderError",
    "ProviderNode",
    "QuotaError",
    "ThrottledError",
    "is_insufficient_capacity",
]

TAG_CLUSTER = "cumulus:cluster"
TAG_REQUEST = "cumulus:request-id"
TAG_NODE_TYPE = "cumulus:node-type"


@dataclass(frozen=True, slots=True)
class ProviderNode:
    """A node as its provider lists it (portable core plus provider-specific `extra`)."""

    id: str
    node_type: str
    state: str  # "pending" | "running" | "terminated"
    request_id: str
    cluster: str
    created_at: float
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeBootstrap:
    """What a new node needs to join the cluster: rendered into cloud-init user data (aws,
    libcloud) or applied over SSH (qemu, libcloud drivers without user data).

    The node agent started with it calls `POST {control_plane_url}/v1/internal/join` with the join
    token (single-use, expiring, issued for one provision request) and receives its node id and the
    node secret it then uses for heartbeats.
    """

    control_plane_url: str  # as reachable from the node (e.g. http://10.0.2.2:8080 inside QEMU)
    join_token: str
    agent_package: str = ""  # a pip-installable URL or local path of the cumulus package
    runtime_image: str = ""  # a registry reference; "" = the agent builds it from Debian's mirror
    agent_port: int = 8081
    node_type: str = ""
    extra_env: Mapping[str, str] = field(default_factory=dict)


BootstrapFor = Callable[[str], NodeBootstrap]
"""Gives the bootstrap for a provision request id (the control plane issues its join token)."""


class ProviderError(Exception):
    """A provider call failed; carries the request id it was made under."""

    def __init__(self, message: str, *, request_id: str = "") -> None:
        super().__init__(message)
        self.request_id = request_id


class InsufficientCapacityError(ProviderError):
    """The provider has no capacity for this node type right now."""


class QuotaError(ProviderError):
    """An account limit stops the provider from creating more nodes."""


class ThrottledError(ProviderError):
    """The provider refused the call for now (its API's rate limit, a transient server error): the
    same call may succeed after a back-off."""


PROGRAMMING_ERRORS: tuple[type[Exception], ...] = (TypeError, KeyError, AttributeError, NameError,
                                                   IndexError, AssertionError)
"""Exceptions that are bugs, in an adapter or the SDK it drives: adapters let them through as they
are (never as a `ProviderError`, which the fleet retries), so that they are seen and fixed."""


def is_insufficient_capacity(err: BaseException) -> bool:
    """Whether `err` means "try another node type or later"."""
    return isinstance(err, InsufficientCapacityError)


class NodeProvider(Protocol):
    """Creates and removes nodes for one cluster.

    Guarantees, which the contract suite checks for every implementation:
    - `create` is idempotent by `request_id`: calling it again with the same id returns the nodes of
      the first call instead of creating more.
    - Every node is tagged with the cluster name and its request id, so `list_instances` finds all of
      this cluster's nodes after a control-plane restart, and nothing of other clusters.
    - `terminate` of a node that is missing or already gone is success.
    - Node ids are unique and never reused. Listings are eventually consistent.
    - Failures raise `ProviderError` or a subclass, never an SDK exception: `InsufficientCapacityError`
      (no capacity for this node type now: try another), `QuotaError` (an account limit: stop
      adding), `ThrottledError` (rate limited or transient: retry after a back-off). Programming
      errors (`PROGRAMMING_ERRORS`) propagate unchanged.
    - A node created but not joined within `boot_deadline_s` will not join (its boot failed): the
      fleet terminates and replaces it.
    """

    name: str
    cluster: str
    boot_deadline_s: float

    def create(self, node_type: NodeType, count: int, *, request_id: str) -> list[ProviderNode]:
        """Create `count` nodes of `node_type` (or return those already created for `request_id`)."""
        ...

    def terminate(self, ids: Sequence[str], *, request_id: str) -> None:
        """Terminate nodes by id; missing ids are success."""
        ...

    def list_instances(self) -> list[ProviderNode]:
        """This cluster's nodes that are not terminated."""
        ...
