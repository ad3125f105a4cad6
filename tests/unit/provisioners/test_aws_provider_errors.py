"""AwsProvider without a server: botocore errors become typed errors; EC2_ACTIONS matches the calls."""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

import provisioners.aws as aws_module
from placement import Resources
from provisioners.aws import EC2_ACTIONS, AwsProvider, client_token, map_error
from provisioners.base import (
    InsufficientCapacityError,
    NodeBootstrap,
    NodeType,
    ProviderError,
    QuotaError,
    ThrottledError,
)

SMALL = NodeType(name="small", capacity=Resources(1000, 512))


def bootstrap_for(request_id: str) -> NodeBootstrap:
    return NodeBootstrap(control_plane_url="http://10.0.0.1:8080", join_token="tok-never-logged",
                         agent_package="https://cp.example/cumulus.whl")


@pytest.fixture
def ec2() -> Any:
    """A real boto3 EC2 client that never reaches the network (calls are answered by a Stubber)."""
    return boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x",
                        endpoint_url="http://127.0.0.1:9")


@pytest.fixture
def stub(ec2: Any) -> Iterator[Stubber]:
    with Stubber(ec2) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def provider(ec2: Any) -> AwsProvider:
    return AwsProvider("c1", bootstrap_for, region="us-east-1", image_id="ami-12345678",
                       instance_types={"small": "t3.micro"}, client=ec2)


@pytest.mark.parametrize("code, expected", [
    ("InsufficientInstanceCapacity", InsufficientCapacityError),
    ("InsufficientHostCapacity", InsufficientCapacityError),
    ("InstanceLimitExceeded", QuotaError),
    ("VcpuLimitExceeded", QuotaError),
    ("VolumeLimitExceeded", QuotaError),
    ("RequestLimitExceeded", ThrottledError),  # API throttling, not an account quota
    ("ServiceUnavailable", ThrottledError),
    ("InternalError", ThrottledError),
    ("UnauthorizedOperation", ProviderError),
    ("InvalidAMIID.NotFound", ProviderError),
])
def test_run_instances_errors_are_typed(ec2: Any, stub: Stubber, code: str, expected: type[ProviderError],
                                        caplog: pytest.LogCaptureFixture) -> None:
    stub.add_response("describe_instances", {"Reservations": []})
    stub.add_client_error("run_instances", service_error_code=code, service_message="no",
                          http_status_code=400)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ProviderError) as info:
        provider(ec2).create(SMALL, 2, request_id="req-1")
    assert type(info.value) is expected
    assert info.value.request_id == "req-1"
    assert code in str(info.value)
    assert "tok-never-logged" not in caplog.text


def test_run_instances_asks_for_exactly_the_missing_nodes(ec2: Any, stub: Stubber) -> None:
    existing = {"InstanceId": "i-0aaaaaaaaaaaaaaa1", "State": {"Name": "running"},
                "Tags": [{"Key": "cumulus:cluster", "Value": "c1"},
                         {"Key": "cumulus:request-id", "Value": "r"},
                         {"Key": "cumulus:node-type", "Value": "small"}]}
    stub.add_response("describe_instances", {"Reservations": [{"Instances": [existing]}]})
    stub.add_response("run_instances", {"Instances": [{"InstanceId": "i-0aaaaaaaaaaaaaaa2",
                                                       "State": {"Name": "pending"}}]},
                      expected_params={"ImageId": "ami-12345678", "InstanceType": "t3.micro",
                                       "MinCount": 1, "MaxCount": 1, "UserData": ANY,
                                       "ClientToken": client_token("c1", "r", 1), "TagSpecifications": ANY})
    nodes = provider(ec2).create(SMALL, 2, request_id="r")
    assert [n.id for n in nodes] == ["i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2"]
    assert all(n.cluster == "c1" and n.request_id == "r" and n.node_type == "small" for n in nodes)


def test_client_token_fits_ec2_and_differs_per_cluster_and_progress() -> None:
    token = client_token("c1", "r", 0)
    assert len(token) <= 64 and token.isascii()
    assert token != client_token("c2", "r", 0)
    assert token != client_token("c1", "r", 1)


def test_describe_errors_are_typed(ec2: Any, stub: Stubber) -> None:
    stub.add_client_error("describe_instances", service_error_code="AuthFailure", http_status_code=401)
    with pytest.raises(ProviderError, match="AuthFailure"):
        provider(ec2).list_instances()


def test_terminate_missing_ids_is_success(ec2: Any, stub: Stubber) -> None:
    stub.add_client_error("terminate_instances", service_error_code="InvalidInstanceID.NotFound",
                          http_status_code=400)
    stub.add_response("describe_instances", {"Reservations": []})
    provider(ec2).terminate(["i-0123456789abcdef0"], request_id="r")


def test_terminate_with_some_missing_terminates_the_rest(ec2: Any, stub: Stubber) -> None:
    live = {"InstanceId": "i-0aaaaaaaaaaaaaaa1", "State": {"Name": "running"}, "Tags": []}
    stub.add_client_error("terminate_instances", service_error_code="InvalidInstanceID.NotFound",
                          http_status_code=400)
    stub.add_response("describe_instances", {"Reservations": [{"Instances": [live]}]})
    stub.add_response("terminate_instances", {"TerminatingInstances": []},
                      expected_params={"InstanceIds": ["i-0aaaaaaaaaaaaaaa1"]})
    provider(ec2).terminate(["i-0aaaaaaaaaaaaaaa1", "i-0bbbbbbbbbbbbbbb2"], request_id="r")


def test_terminate_nothing_calls_nothing(ec2: Any, stub: Stubber) -> None:
    provider(ec2).terminate([], request_id="r")


def test_terminate_other_errors_are_typed(ec2: Any, stub: Stubber) -> None:
    stub.add_client_error("terminate_instances", service_error_code="UnauthorizedOperation",
                          http_status_code=403)
    with pytest.raises(ProviderError) as info:
        provider(ec2).terminate(["i-0aaaaaaaaaaaaaaa1"], request_id="r-term")
    assert info.value.request_id == "r-term"


def test_non_client_errors_become_provider_errors() -> None:
    err = map_error(ConnectionError("refused"), request_id="r", action="RunInstances")
    assert type(err) is ProviderError and err.request_id == "r" and "refused" in str(err)


def test_ec2_actions_match_the_client_calls(ec2: Any) -> None:
    """Every boto3 EC2 call in provisioners/aws.py needs its IAM action in EC2_ACTIONS, and no more
    (plus ec2:CreateTags, which RunInstances with TagSpecifications requires)."""
    tree = ast.parse(Path(aws_module.__file__).read_text())
    methods: set[str] = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "ec2"):
            methods.add(node.attr)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get_paginator" and node.args
                and isinstance(node.args[0], ast.Constant)):
            methods.add(str(node.args[0].value))
    methods.discard("get_paginator")
    assert methods, "found no EC2 calls in provisioners/aws.py"
    mapping = ec2.meta.method_to_api_mapping
    unknown = methods - set(mapping)
    assert not unknown, f"not boto3 EC2 methods: {unknown}"
    used = {f"ec2:{mapping[m]}" for m in methods}
    assert used <= set(EC2_ACTIONS), f"missing from EC2_ACTIONS: {used - set(EC2_ACTIONS)}"
    assert set(EC2_ACTIONS) - used == {"ec2:CreateTags"}
    assert len(EC2_ACTIONS) == len(set(EC2_ACTIONS))


def test_a_programming_error_in_a_call_is_not_made_a_provider_error(ec2: Any) -> None:
    class Broken:  # an SDK (or adapter) bug: the call itself raises TypeError
        def get_paginator(self, name: str) -> Any:
            raise TypeError("paginate() got an unexpected keyword argument 'Filter'")

    with pytest.raises(TypeError):
        AwsProvider("c1", bootstrap_for, region="us-east-1", image_id="ami-12345678",
                    instance_types={"small": "t3.micro"}, client=Broken()).list_instances()
