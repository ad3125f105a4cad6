"""The `NodeProvider` contract run against every implementation: fake, local, aws, libcloud."""

from __future__ import annotations

import pytest
from contract.fake_provider import CreateCall, FakeCloud, FakeProvider
from contract.node_provider_contract import NodeProviderContract

from provisioners.base import InsufficientCapacityError, NodeProvider, NodeType


class TestFakeProvider(NodeProviderContract):
    """The recording fake keeps the same promises as the real providers."""

    @pytest.fixture
    def cloud(self) -> FakeCloud:
        return FakeCloud()

    @pytest.fixture
    def provider(self, cloud: FakeCloud) -> NodeProvider:
        return FakeProvider("cluster-a", cloud=cloud)

    @pytest.fixture
    def other_provider(self, cloud: FakeCloud) -> NodeProvider:
        return FakeProvider("cluster-b", cloud=cloud)

    def test_records_calls_and_raises_next_create_error_once(self, cloud: FakeCloud) -> None:
        fake = FakeProvider("cluster-a", cloud=cloud)
        small = NodeType(name="small", cpu_millis=1000, memory_mib=512)
        fake.next_create_error = InsufficientCapacityError("none left", request_id="r1")
        with pytest.raises(InsufficientCapacityError):
            fake.create(small, 1, request_id="r1")
        assert fake.create(small, 1, request_id="r1")
        assert fake.create_calls == [CreateCall("small", 1, "r1")] * 2
