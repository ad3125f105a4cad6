"""The aws provider: a node is an EC2 instance, created with boto3 and bootstrapped by cloud-init.

Every instance carries the tags `cumulus:cluster`, `cumulus:request-id`, `cumulus:node-type` and
`Name`. `create` is idempotent by request id twice over: it first looks up the request's live
instances by tag and only launches the missing ones (moto, and EC2 right after a crash, need this),
and it sends a `ClientToken` derived from (cluster, request id, instances already found) so that real
EC2 deduplicates a launch whose response was lost before its tags became visible.

Credentials come from boto3's usual chain (environment, shared config, instance profile), never from
Cumulus' configuration. `EC2_ACTIONS` lists the IAM actions this module needs.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from provisioners.base import (
    PROGRAMMING_ERRORS,
    TAG_CLUSTER,
    TAG_NODE_TYPE,
    TAG_REQUEST,
    BootstrapFor,
    InsufficientCapacityError,
    NodeType,
    ProviderError,
    ProviderNode,
    QuotaError,
    ThrottledError,
)
from provisioners.cloudinit import render_user_data

log = logging.getLogger("cumulus.provisioners.aws")

EC2_ACTIONS: tuple[str, ...] = (
    "ec2:DescribeInstances",
    "ec2:RunInstances",
    "ec2:CreateTags",  # tagging at launch (TagSpecifications) needs it
    "ec2:TerminateInstances",
)
"""The IAM actions the aws provider calls: a policy granting exactly these suffices."""

LIVE_STATES = ("pending", "running")
CAPACITY_CODES = frozenset({"InsufficientInstanceCapacity", "InsufficientHostCapacity",
                            "InsufficientReservedInstanceCapacity", "InsufficientCapacity",
                            "InsufficientFreeAddressesInSubnet"})
THROTTLE_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException"})
TRANSIENT_CODES = THROTTLE_CODES | {"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable"}
MISSING_CODES = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
_TERMINATE_BATCH = 500


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore `ClientError` ("" for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def map_error(exc: BaseException, *, request_id: str, action: str) -> ProviderError:
    """The typed provider error for an exception raised by boto3 during `action`.

    Capacity shortages become `InsufficientCapacityError`; account limits (`*LimitExceeded`,
    except API throttling) become `QuotaError`; throttling and EC2's transient server errors become
    `ThrottledError`; everything else is a `ProviderError`. All carry `request_id`. A programming
    error (`PROGRAMMING_ERRORS`) is re-raised as it is.
    """
    if isinstance(exc, PROGRAMMING_ERRORS):
        raise exc
    code = error_code(exc)
    message = f"ec2 {action} failed: {code or type(exc).__name__}: {exc}"
    if code in CAPACITY_CODES:
        return InsufficientCapacityError(message, request_id=request_id)
    if code in TRANSIENT_CODES:
        return ThrottledError(message, request_id=request_id)
    if code.endswith("LimitExceeded"):
        return QuotaError(message, request_id=request_id)
    return ProviderError(message, request_id=request_id)


def client_token(cluster: str, request_id: str, already: int) -> str:
    """EC2's idempotency token (at most 64 ASCII characters) for launching the rest of a request.

    Tokens are account-wide, so the cluster is part of it; the number of instances already found is
    too, because EC2 rejects a reused token with different parameters (a smaller count).
    """
    return hashlib.sha256(f"{cluster}\0{request_id}\0{already}".encode()).hexdigest()


class AwsProvider:
    """`NodeProvider` on EC2 through boto3 (also a moto server, through `endpoint_url`).

    Guarantees: those of `NodeProvider`. `create` launches all missing instances in one
    `RunInstances` call (MinCount = MaxCount), so a capacity shortage fails the whole call rather than
    creating part of it. `list_instances` shows pending and running instances only.
    """

    name = "aws"
    boot_deadline_s = 600.0  # an EC2 instance boots and installs the agent from its user data

    def __init__(self, cluster: str, bootstrap_for: BootstrapFor, *, region: str,
                 endpoint_url: str | None = None, image_id: str, subnet_id: str | None = None,
                 security_group_ids: Sequence[str] = (), key_name: str | None = None,
                 instance_types: Mapping[str, str], advertise_url: str | None = None,
                 extra_tags: Mapping[str, str] | None = None, session: Any = None,
                 client: Any = None) -> None:
        """`instance_types` maps node type names to EC2 instance types (a node type's
        `extra["instance_type"]` is the fallback). `client` (a boto3 EC2 client) or `session` (a
        `boto3.Session`) may be injected; otherwise one is made for `region` and `endpoint_url`.
        `advertise_url` None lets each node discover its address from the metadata service."""
        self.cluster = cluster
        self.bootstrap_for = bootstrap_for
        self.region = region
        self.image_id = image_id
        self.subnet_id = subnet_id
        self.security_group_ids = list(security_group_ids)
        self.key_name = key_name
        self.instance_types = dict(instance_types)
        self.advertise_url = advertise_url
        self.extra_tags = dict(extra_tags or {})
        if client is None:
            if session is None:
                try:
                    import boto3
                except ImportError as exc:
                    raise ProviderError(f"the aws provider needs boto3: {exc}") from exc
                session = boto3.Session(region_name=region)
            client = session.client("ec2", region_name=region, endpoint_url=endpoint_url)
        self.ec2 = client

    # -- NodeProvider ------------------------------------------------------------------------

    def create(self, node_type: NodeType, count: int, *, request_id: str) -> list[ProviderNode]:
        """Launch `count` instances of `node_type`, or return those `request_id` already launched."""
        existing = self._describe([("tag:" + TAG_REQUEST, [request_id])], request_id=request_id)
        missing = count - len(existing)
        if missing <= 0:
            log.info("event=create_idempotent cluster=%s request_id=%s found=%d", self.cluster,
                     request_id, len(existing))
            return existing
        instance_type = self._instance_type(node_type, request_id)
        bootstrap = self.bootstrap_for(request_id)
        if not bootstrap.node_type:
            bootstrap = replace(bootstrap, node_type=node_type.name)
        try:
            user_data = render_user_data(bootstrap, provider=self.name, advertise_url=self.advertise_url)
        except ValueError as exc:
            raise ProviderError(f"cannot render the node bootstrap: {exc}", request_id=request_id) from exc
        tags = [{"Key": k, "Value": v} for k, v in self._tags(node_type, request_id).items()]
        params: dict[str, Any] = {
            "ImageId": self.image_id, "InstanceType": instance_type, "MinCount": missing,
            "MaxCount": missing, "UserData": user_data,
            "ClientToken": client_token(self.cluster, request_id, len(existing)),
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                                  {"ResourceType": "volume", "Tags": tags}],
        }
        if self.subnet_id:
            params["SubnetId"] = self.subnet_id
        if self.security_group_ids:
            params["SecurityGroupIds"] = self.security_group_ids
        if self.key_name:
            params["KeyName"] = self.key_name
        log.info("event=run_instances cluster=%s request_id=%s node_type=%s instance_type=%s count=%d "
                 "user_data_bytes=%d", self.cluster, request_id, node_type.name, instance_type, missing,
                 len(user_data))
        try:
            reply = self.ec2.run_instances(**params)
        except Exception as exc:
            err = map_error(exc, request_id=request_id, action="RunInstances")
            log.warning("event=run_instances_failed cluster=%s request_id=%s error_type=%s error=%s",
                        self.cluster, request_id, type(err).__name__, err)
            raise err from exc
        # RunInstances' reply need not echo the tags: fill in what we asked for.
        created = [replace(self._node(inst), cluster=self.cluster, request_id=request_id,
                           node_type=node_type.name) for inst in reply.get("Instances", [])]
        log.info("event=instances_created cluster=%s request_id=%s ids=%s", self.cluster, request_id,
                 ",".join(n.id for n in created))
        return existing + created

    def terminate(self, ids: Sequence[str], *, request_id: str) -> None:
        """Terminate instances by id. Missing or malformed ids are success; `[]` does nothing."""
        wanted = list(dict.fromkeys(ids))
        for start in range(0, len(wanted), _TERMINATE_BATCH):
            self._terminate_batch(wanted[start:start + _TERMINATE_BATCH], request_id)

    def list_instances(self) -> list[ProviderNode]:
        """This cluster's pending and running instances."""
        return self._describe([], request_id="")

    # -- helpers -----------------------------------------------------------------------------

    def _terminate_batch(self, ids: list[str], request_id: str) -> None:
        try:
            self.ec2.terminate_instances(InstanceIds=ids)
        except Exception as exc:
            if error_code(exc) not in MISSING_CODES:
                raise map_error(exc, request_id=request_id, action="TerminateInstances") from exc
            # EC2 refuses the whole call when one id is missing: terminate the ones that exist.
            present = [n.id for n in self._describe([("instance-id", ids)], request_id=request_id)]
            log.info("event=terminate_missing cluster=%s request_id=%s missing=%s", self.cluster,
                     request_id, ",".join(sorted(set(ids) - set(present))))
            if not present:
                return
            try:
                self.ec2.terminate_instances(InstanceIds=present)
            except Exception as again:
                if error_code(again) not in MISSING_CODES:
                    raise map_error(again, request_id=request_id, action="TerminateInstances") from again
        log.info("event=instances_terminated cluster=%s request_id=%s ids=%s", self.cluster, request_id,
                 ",".join(ids))

    def _describe(self, filters: Iterable[tuple[str, list[str]]], *, request_id: str) -> list[ProviderNode]:
        """Live instances of this cluster matching `filters`, across all result pages."""
        all_filters = [{"Name": "tag:" + TAG_CLUSTER, "Values": [self.cluster]},
                       {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
                       *({"Name": name, "Values": values} for name, values in filters)]
        nodes: list[ProviderNode] = []
        try:
            for page in self.ec2.get_paginator("describe_instances").paginate(Filters=all_filters):
                for reservation in page.get("Reservations", []):
                    nodes.extend(self._node(inst) for inst in reservation.get("Instances", []))
        except Exception as exc:
            raise map_error(exc, request_id=request_id, action="DescribeInstances") from exc
        return sorted(nodes, key=lambda n: (n.created_at, n.id))

    def _instance_type(self, node_type: NodeType, request_id: str) -> str:
        instance_type = self.instance_types.get(node_type.name) or node_type.extra.get("instance_type")
        if not instance_type:
            raise ProviderError(f"no EC2 instance type configured for node type {node_type.name!r}",
                                request_id=request_id)
        return str(instance_type)

    def _tags(self, node_type: NodeType, request_id: str) -> dict[str, str]:
        return {**self.extra_tags, TAG_CLUSTER: self.cluster, TAG_REQUEST: request_id,
                TAG_NODE_TYPE: node_type.name, "Name": f"cumulus-{self.cluster}-{node_type.name}"}

    def _node(self, inst: Mapping[str, Any]) -> ProviderNode:
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        launched = inst.get("LaunchTime")
        state = str(inst.get("State", {}).get("Name", "pending"))
        return ProviderNode(
            id=str(inst["InstanceId"]), node_type=tags.get(TAG_NODE_TYPE, ""),
            state=state if state in LIVE_STATES else "terminated",
            request_id=tags.get(TAG_REQUEST, ""), cluster=tags.get(TAG_CLUSTER, ""),
            created_at=launched.timestamp() if launched is not None else 0.0,
            extra={"private_ip": inst.get("PrivateIpAddress", ""),
                   "public_ip": inst.get("PublicIpAddress", ""),
                   "instance_type": inst.get("InstanceType", ""),
                   "launch_time": launched.isoformat() if launched is not None else "",
                   "availability_zone": inst.get("Placement", {}).get("AvailabilityZone", ""),
                   "ec2_state": state})
