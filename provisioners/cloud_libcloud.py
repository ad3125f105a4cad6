"""The libcloud provider: a node is a machine made by any Apache libcloud compute driver.

The driver is chosen by name (`libcloud.compute.types.Provider`, e.g. "ec2", "openstack", "gce")
and built from `driver_args` / `driver_kwargs` taken from the config; credentials go there from the
environment or the SDK's usual files, never from the repo. libcloud is imported only here, and only
when this provider is built.

What a driver can do is read from its `create_node` signature, and stated in `capabilities`
rather than discovered as a surprise:
- tags: `ex_metadata` (EC2 tags, OpenStack server metadata). Every node's name also encodes its
  cluster, node type and request id (`cumulus--<cluster>--<type>--<request>--<n>`), which is what
  listings fall back to when a driver keeps no tags (then those three must be name-safe).
- bootstrap: cloud-init user data through `ex_userdata` (or `ex_user_data` / `ex_customdata`);
  otherwise the same script over SSH (`ssh` settings required, checked at construction).
- idempotency: by tag (or name) lookup of the request's nodes, plus `ex_clienttoken` when the
  driver takes one.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
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
from provisioners.ssh import SshSettings, run_script

log = logging.getLogger("cumulus.provisioners.libcloud")

USER_DATA_PARAMS = ("ex_userdata", "ex_user_data", "ex_customdata")
NAME_PREFIX = "cumulus"
_NAME_SAFE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_CAPACITY_MARKERS = ("InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity",
                     "ZONE_RESOURCE_POOL_EXHAUSTED", "No valid host was found")
# Rate limits and transient server errors, as EC2, OpenStack and GCE drivers word them.
_TRANSIENT_MARKERS = ("RequestLimitExceeded", "Throttling", "RateLimitExceeded", "rateLimitExceeded",
                      "ServiceUnavailable", "InternalError", "503 Service Unavailable", "429 Too Many")
_QUOTA_MARKERS = ("LimitExceeded", "QuotaExceeded", "QUOTA_EXCEEDED", "quota exceeded", "Quota exceeded")
_MISSING_MARKERS = ("NotFound", "not found", "does not exist", "404")


@dataclass(frozen=True, slots=True)
class DriverCapabilities:
    """What the chosen driver's `create_node` accepts, hence how nodes are tagged and bootstrapped."""

    tags: bool
    user_data_param: str | None
    client_token: bool
    auth: bool

    @property
    def bootstrap(self) -> str:
        """"user-data" when the driver takes user data, else "ssh"."""
        return "user-data" if self.user_data_param else "ssh"


def capabilities_of(create_node: Any) -> DriverCapabilities:
    """Read a driver's capabilities from its `create_node` signature."""
    try:
        params = inspect.signature(create_node).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    return DriverCapabilities(tags="ex_metadata" in params,
                              user_data_param=next((p for p in USER_DATA_PARAMS if p in params), None),
                              client_token="ex_clienttoken" in params, auth="auth" in params)


def map_error(exc: BaseException, *, request_id: str, action: str) -> ProviderError:
    """The typed provider error for an exception raised by a libcloud driver during `action`."""
    if isinstance(exc, PROGRAMMING_ERRORS):  # a bug in the adapter or the driver: seen as it is
        raise exc
    text = f"{type(exc).__name__}: {exc}"
    message = f"libcloud {action} failed: {text}"
    if type(exc).__name__ == "RateLimitReachedError" or any(m in text for m in _TRANSIENT_MARKERS):
        return ThrottledError(message, request_id=request_id)
    if any(m in text for m in _CAPACITY_MARKERS):
        return InsufficientCapacityError(message, request_id=request_id)
    if any(m in text for m in _QUOTA_MARKERS):
        return QuotaError(message, request_id=request_id)
    return ProviderError(message, request_id=request_id)


def node_name(cluster: str, node_type: str, request_id: str, index: int) -> str:
    """The name a node is created with; `parse_name` reads it back."""
    return f"{NAME_PREFIX}--{cluster}--{node_type}--{request_id}--{index}"


def parse_name(name: str) -> tuple[str, str, str, int] | None:
    """(cluster, node type, request id, index) from a name made by `node_name`, else None."""
    parts = name.split("--")
    if len(parts) != 5 or parts[0] != NAME_PREFIX or not parts[4].isdigit():
        return None
    return parts[1], parts[2], parts[3], int(parts[4])


def _tags_of(node: Any) -> dict[str, str]:
    """Tags of a libcloud node: `extra["tags"]` (EC2), `extra["metadata"]` (OpenStack, GCE items)."""
    extra = node.extra or {}
    tags: dict[str, str] = {}
    for key in ("metadata", "tags"):
        value = extra.get(key)
        if isinstance(value, Mapping):
            items = value.get("items")
            if isinstance(items, list):
                tags.update({str(i.get("key")): str(i.get("value")) for i in items if isinstance(i, Mapping)})
            else:
                tags.update({str(k): str(v) for k, v in value.items()})
    if TAG_CLUSTER not in tags and node.name:
        parsed = parse_name(str(node.name))
        if parsed is not None:
            tags.setdefault(TAG_CLUSTER, parsed[0])
            tags.setdefault(TAG_NODE_TYPE, parsed[1])
            tags.setdefault(TAG_REQUEST, parsed[2])
    return tags


class LibcloudProvider:
    """`NodeProvider` over any libcloud compute driver.

    Guarantees: those of `NodeProvider`. Nodes are created one `create_node` call at a time, so an
    interrupted request is finished (not repeated) by the next `create` with its id. Nodes listed in
    states other than pending/running (stopped, error, unknown) are not part of `list_instances`.
    With SSH bootstrap, `create` returns after each new node ran the bootstrap script (bounded by the
    `ssh` timeouts); a node whose bootstrap failed is terminated and the error raised.
    """

    name = "libcloud"
    boot_deadline_s = 600.0  # a cloud VM boots and installs the agent from its user data

    def __init__(self, cluster: str, bootstrap_for: BootstrapFor, *, driver: str,
                 driver_args: Sequence[Any] = (), driver_kwargs: Mapping[str, Any] | None = None,
                 sizes: Mapping[str, str], image: str, location: str | None = None,
                 ssh: SshSettings | None = None, create_kwargs: Mapping[str, Any] | None = None,
                 advertise_url: str | None = None, node_driver: Any = None) -> None:
        """`sizes` maps node type names to the driver's size ids (a node type's `extra["size"]` is
        the fallback); `image` and `location` are the driver's ids. `create_kwargs` are passed to
        every `create_node` (e.g. `ex_keyname`). `node_driver` injects a ready driver instance."""
        self.cluster = cluster
        self.bootstrap_for = bootstrap_for
        self.driver_name = driver
        self.sizes = dict(sizes)
        self.image = image
        self.location = location
        self.ssh = ssh
        self.create_kwargs = dict(create_kwargs or {})
        self.advertise_url = advertise_url
        self.driver = node_driver if node_driver is not None else self._make_driver(
            driver, driver_args, dict(driver_kwargs or {}))
        self.capabilities = capabilities_of(self.driver.create_node)
        if self.capabilities.bootstrap == "ssh" and ssh is None:
            raise ProviderError(f"libcloud driver {driver!r} takes no user data: configure `ssh` settings "
                                "so nodes can be bootstrapped over SSH")
        if not self.capabilities.tags and not _NAME_SAFE.match(cluster):
            raise ProviderError(f"libcloud driver {driver!r} keeps no tags, so the cluster name must be "
                                f"lowercase letters, digits and single hyphens (got {cluster!r})")
        self._size_cache: dict[str, Any] = {}
        log.info("event=libcloud_provider cluster=%s driver=%s tags=%s bootstrap=%s", cluster, driver,
                 self.capabilities.tags, self.capabilities.bootstrap)

    @staticmethod
    def _make_driver(name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        try:
            from libcloud.compute.providers import get_driver
        except ImportError as exc:
            raise ProviderError(f"the libcloud provider needs apache-libcloud: {exc}") from exc
        try:
            return get_driver(name)(*args, **kwargs)
        except Exception as exc:
            raise ProviderError(f"cannot build libcloud driver {name!r}: "
                                f"{type(exc).__name__}: {exc}") from exc

    # -- NodeProvider ------------------------------------------------------------------------

    def create(self, node_type: NodeType, count: int, *, request_id: str) -> list[ProviderNode]:
        """Create `count` nodes of `node_type`, or return those `request_id` already created."""
        existing = [n for n in self._nodes(request_id=request_id) if n.request_id == request_id]
        if len(existing) >= count:
            log.info("event=create_idempotent cluster=%s request_id=%s found=%d", self.cluster,
                     request_id, len(existing))
            return existing
        name_safe = _NAME_SAFE.match(request_id) and _NAME_SAFE.match(node_type.name)
        if not self.capabilities.tags and not name_safe:
            raise ProviderError("this libcloud driver keeps no tags: request ids and node type names must be "
                                "name-safe", request_id=request_id)
        size = self._size(node_type, request_id)
        bootstrap = self.bootstrap_for(request_id)
        if not bootstrap.node_type:
            bootstrap = replace(bootstrap, node_type=node_type.name)
        try:
            script = render_user_data(bootstrap, provider=self.name, advertise_url=self.advertise_url)
        except ValueError as exc:
            raise ProviderError(f"cannot render the node bootstrap: {exc}", request_id=request_id) from exc
        used = {int(n.extra.get("index", -1)) for n in existing}
        free = (i for i in range(count * 2 + len(used)) if i not in used)
        created = list(existing)
        for _ in range(count - len(existing)):
            created.append(self._create_one(node_type, size, request_id, next(free), script))
        return created

    def terminate(self, ids: Sequence[str], *, request_id: str) -> None:
        """Destroy this cluster's nodes with these ids; missing or already gone ids are success."""
        wanted = set(ids)
        if not wanted:
            return
        for node in self._list_raw(request_id):
            if node.id not in wanted or _tags_of(node).get(TAG_CLUSTER) != self.cluster:
                continue
            try:
                self.driver.destroy_node(node)
            except Exception as exc:
                if any(m in str(exc) for m in _MISSING_MARKERS):
                    continue
                raise map_error(exc, request_id=request_id, action="destroy_node") from exc
            log.info("event=node_destroyed cluster=%s request_id=%s id=%s", self.cluster, request_id, node.id)

    def list_instances(self) -> list[ProviderNode]:
        """This cluster's pending and running nodes."""
        return self._nodes(request_id="")

    # -- helpers -----------------------------------------------------------------------------

    def _create_one(self, node_type: NodeType, size: Any, request_id: str, index: int,
                    script: str) -> ProviderNode:
        from libcloud.compute.base import NodeAuthSSHKey, NodeImage, NodeLocation

        name = node_name(self.cluster, node_type.name, request_id, index)
        tags = {TAG_CLUSTER: self.cluster, TAG_REQUEST: request_id, TAG_NODE_TYPE: node_type.name}
        kwargs: dict[str, Any] = dict(self.create_kwargs)
        caps = self.capabilities
        if caps.tags:
            kwargs["ex_metadata"] = tags
        if caps.user_data_param:
            kwargs[caps.user_data_param] = script
        if caps.client_token:
            token = f"{self.cluster}\0{request_id}\0{index}"
            kwargs["ex_clienttoken"] = hashlib.sha256(token.encode()).hexdigest()
        if caps.auth and self.ssh is not None and self.ssh.public_key:
            kwargs["auth"] = NodeAuthSSHKey(self.ssh.public_key)
        if self.location:
            kwargs["location"] = NodeLocation(self.location, self.location, "", self.driver)
        image = NodeImage(self.image, self.image, self.driver)
        log.info("event=create_node cluster=%s request_id=%s node_type=%s size=%s index=%d bootstrap=%s",
                 self.cluster, request_id, node_type.name, size.id, index, caps.bootstrap)
        try:
            raw = self.driver.create_node(name=name, size=size, image=image, **kwargs)
        except Exception as exc:
            err = map_error(exc, request_id=request_id, action="create_node")
            log.warning("event=create_node_failed cluster=%s request_id=%s error_type=%s error=%s",
                        self.cluster, request_id, type(err).__name__, err)
            raise err from exc
        seen = self._node(raw)
        # The reply need not echo tags or a launch time: fill in what we asked for.
        node = replace(seen, cluster=self.cluster, request_id=request_id, node_type=node_type.name,
                       created_at=seen.created_at or time.time(), extra={**seen.extra, "index": index})
        if caps.bootstrap == "ssh":
            self._ssh_bootstrap(raw, script, request_id)
        return node

    def _ssh_bootstrap(self, raw: Any, script: str, request_id: str) -> None:
        assert self.ssh is not None  # checked at construction
        try:
            [(_, addresses)] = self.driver.wait_until_running([raw], timeout=int(self.ssh.ready_timeout_s))
            host = next(iter(addresses or raw.public_ips or raw.private_ips))
            run_script(host, script, self.ssh)
        except Exception as exc:
            log.warning("event=ssh_bootstrap_failed cluster=%s request_id=%s id=%s error=%s", self.cluster,
                        request_id, raw.id, exc)
            try:
                self.driver.destroy_node(raw)
            except Exception as cleanup:
                log.warning("event=destroy_after_failed_bootstrap_failed id=%s error=%s", raw.id, cleanup)
            raise (exc if isinstance(exc, ProviderError) else
                   map_error(exc, request_id=request_id, action="ssh bootstrap")) from exc

    def _size(self, node_type: NodeType, request_id: str) -> Any:
        size_id = self.sizes.get(node_type.name) or node_type.extra.get("size")
        if not size_id:
            raise ProviderError(f"no libcloud size configured for node type {node_type.name!r}",
                                request_id=request_id)
        size_id = str(size_id)
        if size_id not in self._size_cache:
            try:
                sizes = self.driver.list_sizes()
            except Exception as exc:
                raise map_error(exc, request_id=request_id, action="list_sizes") from exc
            match = next((s for s in sizes if size_id in (str(s.id), s.name)), None)
            if match is None:
                raise ProviderError(f"libcloud driver {self.driver_name!r} has no size {size_id!r}",
                                    request_id=request_id)
            self._size_cache[size_id] = match
        return self._size_cache[size_id]

    def _list_raw(self, request_id: str) -> list[Any]:
        try:
            return list(self.driver.list_nodes())
        except Exception as exc:
            raise map_error(exc, request_id=request_id, action="list_nodes") from exc

    def _nodes(self, *, request_id: str) -> list[ProviderNode]:
        nodes = [self._node(raw) for raw in self._list_raw(request_id)]
        mine = [n for n in nodes if n.cluster == self.cluster and n.state in ("pending", "running")]
        return sorted(mine, key=lambda n: (n.created_at, n.id))

    def _node(self, raw: Any) -> ProviderNode:
        from libcloud.compute.types import NodeState

        tags = _tags_of(raw)
        parsed = parse_name(str(raw.name or ""))
        state = {NodeState.RUNNING: "running", NodeState.PENDING: "pending", NodeState.STARTING: "pending",
                 NodeState.REBOOTING: "pending", NodeState.TERMINATED: "terminated"}.get(raw.state, "other")
        created = getattr(raw, "created_at", None)
        extra = raw.extra or {}
        return ProviderNode(
            id=str(raw.id), node_type=tags.get(TAG_NODE_TYPE, ""), state=state,
            request_id=tags.get(TAG_REQUEST, ""), cluster=tags.get(TAG_CLUSTER, ""),
            created_at=created.timestamp() if isinstance(created, datetime) else 0.0,
            extra={"name": raw.name, "index": parsed[3] if parsed else -1,
                   "private_ip": (raw.private_ips or [""])[0], "public_ip": (raw.public_ips or [""])[0],
                   "size": extra.get("instance_type", getattr(raw.size, "id", "") if raw.size else ""),
                   "libcloud_state": str(raw.state), "driver": self.driver_name})
