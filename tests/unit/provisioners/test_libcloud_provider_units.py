"""LibcloudProvider logic that moto cannot show: drivers without tags or user data (SSH bootstrap over
a loopback paramiko server), capability detection, name encoding and error mapping."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paramiko
import pytest
from libcloud.compute.base import Node, NodeSize
from libcloud.compute.types import NodeState
from ssh_server import LoopbackSshServer

from placement import Resources
from provisioners.base import (
    InsufficientCapacityError,
    NodeBootstrap,
    NodeType,
    ProviderError,
    QuotaError,
    ThrottledError,
)
from provisioners.cloud_libcloud import (
    LibcloudProvider,
    _tags_of,
    capabilities_of,
    map_error,
    node_name,
    parse_name,
)
from provisioners.ssh import SshError, SshSettings, run_script

SMALL = NodeType(name="small", capacity=Resources(1000, 512))


def bootstrap_for(request_id: str) -> NodeBootstrap:
    return NodeBootstrap(control_plane_url="http://10.0.0.1:8080", join_token=f"tok-{request_id}",
                         agent_package="https://cp.example/cumulus.whl", runtime_image="img:1")


class NoUserDataDriver:
    """A libcloud-like driver that keeps no tags and takes no user data (names are all it keeps)."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.destroyed: list[str] = []
        self._ids = itertools.count(1)

    def create_node(self, name: str, size: NodeSize, image: Any, location: Any = None) -> Node:
        node_id = f"n-{next(self._ids)}"
        node = Node(node_id, name, NodeState.PENDING, ["127.0.0.1"], [], self, size=size,
                    created_at=datetime.now(UTC))
        self.nodes[node_id] = node
        return node

    def wait_until_running(self, nodes: list[Node], timeout: int = 600) -> list[tuple[Node, list[str]]]:
        for node in nodes:
            node.state = NodeState.RUNNING
        return [(node, node.public_ips) for node in nodes]

    def list_nodes(self) -> list[Node]:
        return list(self.nodes.values())

    def destroy_node(self, node: Node) -> bool:
        self.nodes[node.id].state = NodeState.TERMINATED
        self.destroyed.append(node.id)
        return True

    def list_sizes(self) -> list[NodeSize]:
        return [NodeSize("s-1", "small-1", 1024, 10, None, 0.01, self)]


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[LoopbackSshServer]:
    with LoopbackSshServer(tmp_path) as server:
        yield server


def ssh_provider(driver: NoUserDataDriver, sshd: LoopbackSshServer, cluster: str = "c1") -> LibcloudProvider:
    settings = SshSettings(username="debian", port=sshd.port, key_filename=str(sshd.client_key_path),
                           ready_timeout_s=60, command_timeout_s=60)  # bounds on a loaded machine
    return LibcloudProvider(cluster, bootstrap_for, driver="nouserdata", sizes={"small": "s-1"}, image="img",
                            ssh=settings, node_driver=driver)


def test_ssh_bootstrap_runs_the_script_as_root_over_stdin(sshd: LoopbackSshServer) -> None:
    driver = NoUserDataDriver()
    prov = ssh_provider(driver, sshd)
    assert prov.capabilities.bootstrap == "ssh" and not prov.capabilities.tags
    nodes = prov.create(SMALL, 2, request_id="r-1")
    assert len(nodes) == 2
    assert sshd.commands == ["sudo -n bash -s"] * 2
    assert all(s.startswith("#!/bin/bash") and '"join_token": "tok-r-1"' in s for s in sshd.scripts)
    # tags come back from the names alone
    listed = prov.list_instances()
    assert sorted(n.id for n in listed) == sorted(n.id for n in nodes)
    assert {(n.cluster, n.request_id, n.node_type) for n in listed} == {("c1", "r-1", "small")}
    assert prov.create(SMALL, 2, request_id="r-1") == listed
    assert len(sshd.scripts) == 2
    prov.terminate([nodes[0].id, "n-404"], request_id="r-2")
    assert [n.id for n in prov.list_instances()] == [nodes[1].id]
    assert sshd.errors == []


def test_a_session_dropped_before_the_script_started_is_retried(sshd: LoopbackSshServer) -> None:
    # A fresh VM's sshd often accepts, authenticates and then restarts under us: nothing ran yet,
    # so the script is sent again on a new connection, once.
    sshd.drop_sessions = 2
    settings = SshSettings(port=sshd.port, key_filename=str(sshd.client_key_path), ready_timeout_s=60)
    result = run_script("127.0.0.1", "echo hi", settings)
    assert result.exit_status == 0 and "agent_started" in result.output
    assert sshd.scripts == ["echo hi"] and sshd.commands == ["sudo -n bash -s"]


def test_failed_ssh_bootstrap_destroys_the_node(sshd: LoopbackSshServer) -> None:
    sshd.exit_status = 7
    driver = NoUserDataDriver()
    with pytest.raises(SshError, match="exited with 7") as info:
        ssh_provider(driver, sshd).create(SMALL, 1, request_id="r-fail")
    assert isinstance(info.value, ProviderError)
    assert driver.destroyed == ["n-1"]


def test_other_clusters_nodes_are_invisible_and_untouched(sshd: LoopbackSshServer) -> None:
    driver = NoUserDataDriver()
    mine, theirs = ssh_provider(driver, sshd, "c1"), ssh_provider(driver, sshd, "c2")
    their_node = theirs.create(SMALL, 1, request_id="r")[0]
    assert mine.list_instances() == []
    mine.terminate([their_node.id], request_id="r")
    assert driver.destroyed == []


def test_ssh_with_a_wrong_key_fails_fast(sshd: LoopbackSshServer, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    paramiko.ECDSAKey.generate().write_private_key_file(str(other))
    settings = SshSettings(port=sshd.port, key_filename=str(other), ready_timeout_s=10)
    with pytest.raises(SshError, match="refused the credentials"):
        run_script("127.0.0.1", "true", settings)
    assert sshd.scripts == []


def test_driver_without_user_data_needs_ssh() -> None:
    with pytest.raises(ProviderError, match="configure `ssh`"):
        LibcloudProvider("c1", bootstrap_for, driver="nouserdata", sizes={}, image="i",
                         node_driver=NoUserDataDriver())


def test_driver_without_tags_needs_name_safe_names(sshd: LoopbackSshServer) -> None:
    with pytest.raises(ProviderError, match="cluster name"):
        ssh_provider(NoUserDataDriver(), sshd, cluster="Prod_Cluster")
    prov = ssh_provider(NoUserDataDriver(), sshd)
    with pytest.raises(ProviderError, match="name-safe") as info:
        prov.create(SMALL, 1, request_id="req/with/slashes")
    assert info.value.request_id == "req/with/slashes"


def test_capabilities_from_signatures() -> None:
    def ec2_like(name: str, size: Any, image: Any, ex_userdata: str = "", ex_metadata: Any = None,
                 ex_clienttoken: str = "", auth: Any = None) -> None: ...

    def do_like(name: str, size: Any, image: Any, location: Any, ex_user_data: str = "") -> None: ...

    def kwargs_only(**kwargs: Any) -> None: ...

    caps = capabilities_of(ec2_like)
    assert (caps.tags, caps.client_token, caps.auth) == (True, True, True)
    assert caps.user_data_param == "ex_userdata"
    assert capabilities_of(do_like).user_data_param == "ex_user_data"
    assert capabilities_of(do_like).bootstrap == "user-data"
    assert capabilities_of(kwargs_only).bootstrap == "ssh"


def test_names_round_trip() -> None:
    name = node_name("prod-1", "small", "req-abc", 3)
    assert parse_name(name) == ("prod-1", "small", "req-abc", 3)
    assert parse_name("web-server") is None
    assert parse_name("cumulus--a--b--c--x") is None


def test_tags_from_openstack_and_gce_metadata() -> None:
    openstack = Node("1", "x", NodeState.RUNNING, [], [], None,
                     extra={"metadata": {"cumulus:cluster": "c1", "cumulus:request-id": "r"}})
    gce = Node("2", "x", NodeState.RUNNING, [], [], None,
               extra={"metadata": {"items": [{"key": "cumulus:cluster", "value": "c2"}]}})
    assert _tags_of(openstack)["cumulus:request-id"] == "r"
    assert _tags_of(gce)["cumulus:cluster"] == "c2"


@pytest.mark.parametrize("text, expected", [
    ("InsufficientInstanceCapacity: We currently do not have sufficient capacity", InsufficientCapacityError),
    ("No valid host was found. There are not enough hosts available.", InsufficientCapacityError),
    ("InstanceLimitExceeded: Your quota allows for 0 more running instance(s)", QuotaError),
    ("Quota exceeded for cores: Requested 8, but already used 20 of 20 cores", QuotaError),
    ("RequestLimitExceeded: Request limit exceeded.", ThrottledError),  # API throttling, not a quota
    ("503 Service Unavailable", ThrottledError),
    ("AuthFailure: bad signature", ProviderError),
])
def test_libcloud_errors_are_typed(text: str, expected: type[ProviderError]) -> None:
    err = map_error(Exception(text), request_id="r-9", action="create_node")
    assert type(err) is expected
    assert err.request_id == "r-9"


def test_libcloud_rate_limit_exception_is_throttling() -> None:
    from libcloud.common.exceptions import RateLimitReachedError

    err = map_error(RateLimitReachedError(headers={"retry-after": "3"}), request_id="r", action="list_nodes")
    assert type(err) is ThrottledError


@pytest.mark.parametrize("bug", [TypeError("unexpected keyword"), KeyError("id"), AttributeError("x")])
def test_a_programming_error_is_not_made_a_provider_error(bug: Exception) -> None:
    with pytest.raises(type(bug)):
        map_error(bug, request_id="r", action="create_node")
