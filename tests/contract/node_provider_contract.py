"""The one contract suite for `NodeProvider`, as a base class every implementation subclasses.

Usage (a test module anywhere under `tests/`; `tests/` is on `sys.path`):

    from contract.node_provider_contract import NodeProviderContract

    class TestMyProvider(NodeProviderContract):
        missing_node_id = "i-0123456789abcdef0"   # an id of the provider's form that never existed

        @pytest.fixture
        def provider(self) -> Iterator[NodeProvider]:
            yield MyProvider(cluster="c1", ...)

        @pytest.fixture
        def other_provider(self) -> Iterator[NodeProvider]:
            # the same backend (same cloud, same root folder) but another cluster name
            yield MyProvider(cluster="c2", ...)

Optional overrides: the `node_type` fixture, `count` (nodes per create), `eventual_timeout_s`
(how long listings may lag behind), `poll_interval_s`. Every node a test creates is terminated
when the test ends, whatever its outcome.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from placement import Resources
from provisioners.base import NodeProvider, NodeType, ProviderNode

T = TypeVar("T")

LIVE_STATES = ("pending", "running")


def eventually(predicate: Callable[[], T | None], *, timeout: float, interval: float, what: str) -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def new_request_id() -> str:
    """A fresh request id, unique across runs (listings of a shared backend never collide)."""
    return f"req-{uuid.uuid4().hex[:12]}"


class NodeProviderContract:
    """What every `NodeProvider` guarantees; subclass it and provide the fixtures above.

    The class name does not start with `Test`, so pytest only collects its subclasses.
    """

    count: int = 2
    eventual_timeout_s: float = 20.0
    poll_interval_s: float = 0.1
    missing_node_id: str = "cumulus-missing-node"

    @pytest.fixture
    def provider(self) -> NodeProvider:
        """The provider under test (cluster A). Subclasses override this fixture."""
        pytest.fail(f"{type(self).__name__} must override the `provider` fixture")

    @pytest.fixture
    def other_provider(self) -> NodeProvider:
        """The same backend seen from another cluster (cluster B). Subclasses override this fixture."""
        pytest.fail(f"{type(self).__name__} must override the `other_provider` fixture")

    @pytest.fixture
    def node_type(self) -> NodeType:
        """The node type the suite creates."""
        return NodeType(name="small", capacity=Resources(1000, 512))

    @pytest.fixture
    def created(self, provider: NodeProvider, other_provider: NodeProvider) -> Iterator[list[ProviderNode]]:
        """Nodes created during the test: terminated at teardown, by the provider of their cluster."""
        nodes: list[ProviderNode] = []
        yield nodes
        for prov in (provider, other_provider):
            ids = sorted({n.id for n in nodes if n.cluster == prov.cluster})
            if ids:
                prov.terminate(ids, request_id=new_request_id())

    # -- helpers -----------------------------------------------------------------------------

    def _create(self, prov: NodeProvider, node_type: NodeType, created: list[ProviderNode],
                request_id: str, count: int | None = None) -> list[ProviderNode]:
        nodes = prov.create(node_type, self.count if count is None else count, request_id=request_id)
        created.extend(nodes)
        return nodes

    def _listed(self, prov: NodeProvider) -> dict[str, ProviderNode]:
        return {n.id: n for n in prov.list_instances()}

    def _wait_listed(self, prov: NodeProvider, ids: set[str]) -> dict[str, ProviderNode]:
        def all_there() -> dict[str, ProviderNode] | None:
            listed = self._listed(prov)
            return listed if ids <= listed.keys() else None

        return eventually(all_there, timeout=self.eventual_timeout_s, interval=self.poll_interval_s,
                          what=f"{sorted(ids)} in {prov.cluster}'s listing")

    def _wait_gone(self, prov: NodeProvider, ids: set[str]) -> None:
        eventually(lambda: not (ids & self._listed(prov).keys()), timeout=self.eventual_timeout_s,
                   interval=self.poll_interval_s, what=f"{sorted(ids)} gone from {prov.cluster}'s listing")

    # -- the contract ------------------------------------------------------------------------

    def test_create_returns_count_nodes_tagged(self, provider: NodeProvider, node_type: NodeType,
                                               created: list[ProviderNode]) -> None:
        rid = new_request_id()
        nodes = self._create(provider, node_type, created, rid)
        assert len(nodes) == self.count
        for node in nodes:
            assert node.cluster == provider.cluster
            assert node.request_id == rid
            assert node.node_type == node_type.name
            assert node.state in LIVE_STATES
            assert node.id
            assert node.created_at > 0

    def test_create_again_with_same_request_id_creates_none(
            self, provider: NodeProvider, node_type: NodeType, created: list[ProviderNode]) -> None:
        rid = new_request_id()
        first = self._create(provider, node_type, created, rid)
        self._wait_listed(provider, {n.id for n in first})
        again = self._create(provider, node_type, created, rid)
        assert {n.id for n in again} == {n.id for n in first}
        mine = [n for n in provider.list_instances() if n.request_id == rid]
        assert sorted(n.id for n in mine) == sorted(n.id for n in first)

    def test_list_instances_finds_created_nodes_with_tags(
            self, provider: NodeProvider, node_type: NodeType, created: list[ProviderNode]) -> None:
        rid = new_request_id()
        nodes = self._create(provider, node_type, created, rid)
        listed = self._wait_listed(provider, {n.id for n in nodes})
        for node in nodes:
            seen = listed[node.id]
            assert seen.cluster == provider.cluster
            assert seen.request_id == rid
            assert seen.node_type == node_type.name
            assert seen.state in LIVE_STATES
        assert all(n.cluster == provider.cluster for n in listed.values())

    def test_other_cluster_does_not_see_them(self, provider: NodeProvider, other_provider: NodeProvider,
                                             node_type: NodeType, created: list[ProviderNode]) -> None:
        assert other_provider.cluster != provider.cluster
        mine = {n.id for n in self._create(provider, node_type, created, new_request_id(), count=1)}
        theirs = {n.id for n in self._create(other_provider, node_type, created, new_request_id(), count=1)}
        self._wait_listed(provider, mine)
        self._wait_listed(other_provider, theirs)
        assert not (mine & self._listed(other_provider).keys())
        assert not (theirs & self._listed(provider).keys())

    def test_same_request_id_in_another_cluster_is_a_separate_request(
            self, provider: NodeProvider, other_provider: NodeProvider, node_type: NodeType,
            created: list[ProviderNode]) -> None:
        rid = new_request_id()
        mine = {n.id for n in self._create(provider, node_type, created, rid, count=1)}
        theirs = {n.id for n in self._create(other_provider, node_type, created, rid, count=1)}
        assert len(theirs) == 1
        assert not (mine & theirs)

    def test_terminate_removes_them(self, provider: NodeProvider, node_type: NodeType,
                                    created: list[ProviderNode]) -> None:
        nodes = self._create(provider, node_type, created, new_request_id())
        ids = {n.id for n in nodes}
        self._wait_listed(provider, ids)
        provider.terminate(sorted(ids), request_id=new_request_id())
        self._wait_gone(provider, ids)

    def test_terminate_missing_or_terminated_ids_is_success(
            self, provider: NodeProvider, node_type: NodeType, created: list[ProviderNode]) -> None:
        provider.terminate([], request_id=new_request_id())
        provider.terminate([self.missing_node_id], request_id=new_request_id())
        nodes = self._create(provider, node_type, created, new_request_id(), count=1)
        ids = [n.id for n in nodes]
        provider.terminate(ids, request_id=new_request_id())
        self._wait_gone(provider, set(ids))
        provider.terminate(ids, request_id=new_request_id())
        provider.terminate([*ids, self.missing_node_id], request_id=new_request_id())

    def test_ids_are_unique(self, provider: NodeProvider, node_type: NodeType,
                            created: list[ProviderNode]) -> None:
        first = self._create(provider, node_type, created, new_request_id())
        second = self._create(provider, node_type, created, new_request_id())
        ids = [n.id for n in first + second]
        assert len(ids) == len(set(ids)) == 2 * self.count
