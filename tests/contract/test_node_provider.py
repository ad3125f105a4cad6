"""The `NodeProvider` contract run against every implementation: fake, local, aws, libcloud."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from contract.fake_provider import CreateCall, FakeCloud, FakeProvider
from contract.motoserver import MotoServer
from contract.node_provider_contract import NodeProviderContract
from helpers import DOCKER_HOST

from placement import Resources
from provisioners.aws import AwsProvider
from provisioners.base import (
    TAG_CLUSTER,
    TAG_NODE_TYPE,
    TAG_REQUEST,
    InsufficientCapacityError,
    NodeBootstrap,
    NodeProvider,
    NodeType,
    ProviderError,
    ProviderNode,
)
from provisioners.cloud_libcloud import LibcloudProvider, node_name
from provisioners.local import AgentBootstrap, LocalProvider


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
        small = NodeType(name="small", capacity=Resources(1000, 512))
        fake.next_create_error = InsufficientCapacityError("none left", request_id="r1")
        with pytest.raises(InsufficientCapacityError):
            fake.create(small, 1, request_id="r1")
        assert fake.create(small, 1, request_id="r1")
        assert fake.create_calls == [CreateCall("small", 1, "r1")] * 2


# -- aws: boto3 against a moto server ----------------------------------------------------------

def bootstrap_for(request_id: str) -> NodeBootstrap:
    """What the control plane would issue: a join token per request."""
    return NodeBootstrap(control_plane_url="http://10.0.0.1:8080", join_token=f"join-{request_id}",
                         agent_package="https://cp.example/cumulus.whl", runtime_image="cumulus/python:3.11")


def aws_provider(moto_server: MotoServer, ami: str, cluster: str, client: Any = None) -> AwsProvider:
    """An `AwsProvider` on the moto server (its own boto3 client unless one is shared)."""
    return AwsProvider(cluster, bootstrap_for, region=moto_server.region,
                       endpoint_url=moto_server.endpoint_url, image_id=ami,
                       instance_types={"small": "t3.micro", "large": "m5.large"}, client=client)


@pytest.mark.aws
class TestAwsProvider(NodeProviderContract):
    """boto3 EC2 against a real moto server."""

    missing_node_id = "i-0123456789abcdef0"

    @pytest.fixture
    def cluster(self) -> str:
        return f"aws-{uuid.uuid4().hex[:8]}"

    @pytest.fixture
    def provider(self, moto_server: MotoServer, moto_ami: str, moto_ec2: Any, cluster: str) -> NodeProvider:
        return aws_provider(moto_server, moto_ami, cluster, client=moto_ec2)

    @pytest.fixture
    def other_provider(self, moto_server: MotoServer, moto_ami: str, moto_ec2: Any,
                       cluster: str) -> NodeProvider:
        return aws_provider(moto_server, moto_ami, cluster + "-other", client=moto_ec2)

    def test_user_data_and_tags_reach_the_instance(self, provider: AwsProvider, moto_ec2: Any,
                                                   node_type: NodeType, created: list[ProviderNode]) -> None:
        nodes = self._create(provider, node_type, created, "req-userdata", count=1)
        attr = moto_ec2.describe_instance_attribute(InstanceId=nodes[0].id, Attribute="userData")
        user_data = base64.b64decode(attr["UserData"]["Value"]).decode()
        assert user_data.startswith("#!/bin/bash")
        assert '"join_token": "join-req-userdata"' in user_data
        assert "https://cp.example/cumulus.whl" in user_data
        reply = moto_ec2.describe_instances(InstanceIds=[nodes[0].id])
        inst = reply["Reservations"][0]["Instances"][0]
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags[TAG_CLUSTER] == provider.cluster
        assert tags[TAG_REQUEST] == "req-userdata"
        assert tags[TAG_NODE_TYPE] == "small"
        assert inst["InstanceType"] == "t3.micro"
        assert nodes[0].extra["instance_type"] == "t3.micro"
        assert nodes[0].extra["private_ip"]

    def test_create_finishes_a_partly_done_request(self, provider: AwsProvider, node_type: NodeType,
                                                   created: list[ProviderNode]) -> None:
        first = self._create(provider, node_type, created, "req-partial", count=1)
        both = self._create(provider, node_type, created, "req-partial", count=3)
        assert len(both) == 3
        assert first[0].id in {n.id for n in both}

    def test_builds_its_own_client_from_endpoint_url(self, moto_server: MotoServer, moto_ami: str,
                                                     cluster: str) -> None:
        own = aws_provider(moto_server, moto_ami, cluster + "-own")
        nodes = own.create(NodeType("large", Resources(2000, 8192)), 1, request_id="req-own")
        try:
            assert [n.id for n in own.list_instances()] == [nodes[0].id]
            assert nodes[0].extra["instance_type"] == "m5.large"
        finally:
            own.terminate([nodes[0].id], request_id="req-own-end")
        assert own.list_instances() == []

    def test_unknown_node_type_is_a_provider_error(self, provider: AwsProvider) -> None:
        with pytest.raises(ProviderError) as info:
            provider.create(NodeType("gpu", Resources(1000, 512)), 1, request_id="req-gpu")
        assert info.value.request_id == "req-gpu"


# -- libcloud: libcloud's real EC2 driver against the same moto server --------------------------

MOTO_EC2_NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15"


@pytest.fixture
def moto_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto answers in the EC2 XML namespace without the trailing slash that libcloud expects.

    Tests only: the product code carries no such patch (see shared/ENVIRONMENT.md).
    """
    import libcloud.compute.drivers.ec2 as ec2_driver

    monkeypatch.setattr(ec2_driver, "NAMESPACE", MOTO_EC2_NAMESPACE)


def libcloud_provider(moto_server: MotoServer, ami: str, cluster: str) -> LibcloudProvider:
    """A `LibcloudProvider` with libcloud's EC2 driver on the moto server."""
    return LibcloudProvider(
        cluster, bootstrap_for, driver="ec2", driver_args=("testing", "testing"),
        driver_kwargs={"host": moto_server.host, "port": moto_server.port, "secure": False,
                       "region": moto_server.region, "signature_version": "4"},
        sizes={"small": "t3.micro", "large": "m5.large"}, image=ami)


@pytest.mark.aws
class TestLibcloudProvider(NodeProviderContract):
    """libcloud's EC2 driver (a real driver) against a real moto server."""

    missing_node_id = "i-0123456789abcdef0"

    @pytest.fixture
    def cluster(self) -> str:
        return f"lc-{uuid.uuid4().hex[:8]}"

    @pytest.fixture
    def provider(self, moto_server: MotoServer, moto_ami: str, moto_namespace: None,
                 cluster: str) -> NodeProvider:
        return libcloud_provider(moto_server, moto_ami, cluster)

    @pytest.fixture
    def other_provider(self, moto_server: MotoServer, moto_ami: str, moto_namespace: None,
                       cluster: str) -> NodeProvider:
        return libcloud_provider(moto_server, moto_ami, cluster + "-other")

    def test_declares_ec2_capabilities(self, provider: LibcloudProvider) -> None:
        caps = provider.capabilities
        assert caps.tags and caps.client_token
        assert caps.user_data_param == "ex_userdata"
        assert caps.bootstrap == "user-data"

    def test_user_data_and_tags_reach_the_instance(self, provider: LibcloudProvider, moto_ec2: Any,
                                                   node_type: NodeType, created: list[ProviderNode]) -> None:
        nodes = self._create(provider, node_type, created, "req-lc-userdata", count=1)
        attr = moto_ec2.describe_instance_attribute(InstanceId=nodes[0].id, Attribute="userData")
        user_data = base64.b64decode(attr["UserData"]["Value"]).decode()
        assert user_data.startswith("#!/bin/bash")
        assert '"provider": "libcloud"' in user_data
        inst = moto_ec2.describe_instances(InstanceIds=[nodes[0].id])["Reservations"][0]["Instances"][0]
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags[TAG_CLUSTER] == provider.cluster
        assert tags[TAG_REQUEST] == "req-lc-userdata"
        assert tags[TAG_NODE_TYPE] == "small"
        assert tags["Name"] == node_name(provider.cluster, "small", "req-lc-userdata", 0)
        assert inst["InstanceType"] == "t3.micro"

    def test_create_finishes_a_partly_done_request(self, provider: LibcloudProvider, node_type: NodeType,
                                                   created: list[ProviderNode]) -> None:
        first = self._create(provider, node_type, created, "req-lc-partial", count=1)
        both = self._create(provider, node_type, created, "req-lc-partial", count=3)
        assert len(both) == 3
        assert first[0].id in {n.id for n in both}
        assert sorted(n.extra["index"] for n in both) == [0, 1, 2]

    def test_unknown_size_is_a_provider_error(self, moto_server: MotoServer, moto_ami: str,
                                              moto_namespace: None) -> None:
        prov = libcloud_provider(moto_server, moto_ami, "lc-sizes")
        with pytest.raises(ProviderError) as info:
            gpu = NodeType("gpu", Resources(1000, 512), extra={"size": "no-such-size"})
            prov.create(gpu, 1, request_id="r-gpu")
        assert info.value.request_id == "r-gpu"


# -- local: node agent processes on this host ----------------------------------------------------

def local_provider(root: Path, cluster: str) -> LocalProvider:
    """A `LocalProvider` whose agents point at a control plane nobody serves (they keep trying to
    join, alive)."""
    def join(request_id: str) -> NodeBootstrap:
        return NodeBootstrap(control_plane_url=f"http://127.0.0.1:{_UNREACHABLE_PORT}",
                             join_token=f"j-{request_id}")

    bootstrap = AgentBootstrap(docker_host=DOCKER_HOST, image="cumulus/python:3.11", heartbeat_interval_s=5.0)
    return LocalProvider(root, cluster, join, bootstrap)


_UNREACHABLE_PORT = 9  # discard: nothing listens on loopback


@pytest.mark.docker
class TestLocalProvider(NodeProviderContract):
    """Agents as processes on this machine (they need a Docker engine to start)."""

    count = 1

    @pytest.fixture
    def root(self, tmp_path: Path) -> Path:
        return tmp_path / "nodes"

    @pytest.fixture
    def provider(self, docker_engine: None, root: Path) -> Iterator[NodeProvider]:
        prov = local_provider(root, "local-a")
        yield prov
        prov.terminate([n.id for n in prov.list_instances()], request_id="teardown")

    @pytest.fixture
    def other_provider(self, docker_engine: None, root: Path) -> Iterator[NodeProvider]:
        prov = local_provider(root, "local-b")
        yield prov
        prov.terminate([n.id for n in prov.list_instances()], request_id="teardown")

    def test_an_agent_started_just_before_a_crash_is_listed_and_terminated(self, provider: LocalProvider,
                                                                           root: Path) -> None:
        # The control plane was killed after starting the agent and before writing its pid down:
        # the record (written first) still lists the node, found by its command line.
        node = provider.create(NodeType("local", Resources(1000, 512)), 1, request_id="req-crash")[0]
        record = root / node.id / "node.json"
        rec = json.loads(record.read_text())
        rec["pid"] = 0
        record.write_text(json.dumps(rec))
        fresh = local_provider(root, "local-a")  # a restarted control plane's provider
        [listed] = fresh.list_instances()
        assert (listed.id, listed.state, listed.extra["pid"]) == (node.id, "running", node.extra["pid"])
        assert fresh.create(NodeType("local", Resources(1000, 512)), 1, request_id="req-crash") == [listed]
        fresh.terminate([node.id], request_id="req-crash-end")
        assert fresh.list_instances() == [] and not (root / node.id).exists()

    def test_a_record_whose_agent_never_started_is_replaced_on_retry(self, provider: LocalProvider,
                                                                      root: Path) -> None:
        # Killed after writing the record, before starting the agent: the retried create starts one.
        (root / "local-dead").mkdir(parents=True)
        (root / "local-dead" / "agent.json").write_text("{}")
        (root / "local-dead" / "node.json").write_text(json.dumps(
            {"id": "local-dead", "cluster": "local-a", "request_id": "req-never", "node_type": "local",
             "pid": 0, "port": 1, "url": "http://127.0.0.1:1", "created_at": 0.0}))
        assert provider.list_instances() == []
        [node] = provider.create(NodeType("local", Resources(1000, 512)), 1, request_id="req-never")
        assert node.id != "local-dead" and node.state == "running"
        assert not (root / "local-dead").exists()
