"""A recording fake `NodeProvider` (Karpenter style) for unit tests of the logic around the seam.

It passes the same contract suite as the real providers. Tests inspect `create_calls` and
`terminate_calls`, and make the next create fail with `next_create_error` (or the next few with
`create_errors`, any exception), or every listing with `list_error`:

    cloud = FakeCloud()
    provider = FakeProvider("c1", cloud=cloud, clock=clock.now)
    provider.next_create_error = InsufficientCapacityError("no capacity", request_id="r1")
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from provisioners.base import NodeType, ProviderError, ProviderNode


@dataclass(frozen=True, slots=True)
class CreateCall:
    """One recorded `create` call."""

    node_type: str
    count: int
    request_id: str


@dataclass(frozen=True, slots=True)
class TerminateCall:
    """One recorded `terminate` call."""

    ids: tuple[str, ...]
    request_id: str


@dataclass
class FakeCloud:
    """The state behind fake providers: several clusters' providers may share one cloud."""

    nodes: dict[str, ProviderNode] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self) -> str:
        """A node id never used before in this cloud."""
        return f"fake-{next(self._ids):06d}"


class FakeProvider:
    """`NodeProvider` over a `FakeCloud`: instant, consistent, recording every call."""

    name = "fake"
    boot_deadline_s = 120.0

    def __init__(self, cluster: str, *, cloud: FakeCloud | None = None,
                 clock: Callable[[], float] = time.time, initial_state: str = "running") -> None:
        self.cluster = cluster
        self.cloud = cloud if cloud is not None else FakeCloud()
        self.clock = clock
        self.initial_state = initial_state
        self.create_calls: list[CreateCall] = []
        self.terminate_calls: list[TerminateCall] = []
        self.next_create_error: ProviderError | None = None
        self.create_errors: list[Exception] = []  # raised by the next creates, one each, in order
        self.list_error: Exception | None = None  # raised by every listing while set
        self.next_terminate_error: ProviderError | None = None

    def create(self, node_type: NodeType, count: int, *, request_id: str) -> list[ProviderNode]:
        """Record the call; raise `next_create_error` once if set; else create the missing nodes."""
        self.create_calls.append(CreateCall(node_type.name, count, request_id))
        if self.create_errors:
            raise self.create_errors.pop(0)
        if self.next_create_error is not None:
            err, self.next_create_error = self.next_create_error, None
            raise err
        done = [n for n in self.cloud.nodes.values()
                if n.cluster == self.cluster and n.request_id == request_id and n.state != "terminated"]
        for _ in range(count - len(done)):
            node = ProviderNode(id=self.cloud.new_id(), node_type=node_type.name, state=self.initial_state,
                                request_id=request_id, cluster=self.cluster, created_at=self.clock(),
                                extra={"private_ip": "127.0.0.1"})
            self.cloud.nodes[node.id] = node
            done.append(node)
        return done

    def terminate(self, ids: Sequence[str], *, request_id: str) -> None:
        """Record the call; raise `next_terminate_error` once if set; missing ids are success."""
        self.terminate_calls.append(TerminateCall(tuple(ids), request_id))
        if self.next_terminate_error is not None:
            err, self.next_terminate_error = self.next_terminate_error, None
            raise err
        for node_id in ids:
            node = self.cloud.nodes.get(node_id)
            if node is not None and node.cluster == self.cluster:
                self.cloud.nodes[node_id] = replace(node, state="terminated")

    def list_instances(self) -> list[ProviderNode]:
        """This cluster's nodes that are not terminated."""
        if self.list_error is not None:
            raise self.list_error
        return [n for n in self.cloud.nodes.values() if n.cluster == self.cluster and n.state != "terminated"]

    def set_state(self, node_id: str, state: str) -> None:
        """Move a node to `state` (e.g. "pending" -> "running", or "terminated" as if the cloud lost it)."""
        self.cloud.nodes[node_id] = replace(self.cloud.nodes[node_id], state=state)

    @property
    def created_ids(self) -> list[str]:
        """Ids of every node this provider ever created, in order."""
        return [n.id for n in self.cloud.nodes.values() if n.cluster == self.cluster]
