"""The control plane's parts wired together: store, fleet, gateway, reconciler, provider."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import cast

from control_plane.agent_package import AgentPackage
from control_plane.auth import Authenticator, cluster_node_token, write_secret
from control_plane.autoscaler import FleetAutoscaler
from control_plane.clock import Clock, SystemClock
from control_plane.config import FileConfig
from control_plane.events import EventLog
from control_plane.fleet import Fleet
from control_plane.gateway import Gateway
from control_plane.leadership import Leadership
from control_plane.reconciler import Reconciler
from control_plane.settings import Settings
from control_plane.store import Store
from node_agent.settings import default_memory_mib
from placement.fleet import FleetPolicy
from provisioners.base import NodeBootstrap, NodeProvider, NodeType, ProviderError
from provisioners.local import AgentBootstrap, LocalProvider
from provisioners.registry import PROVIDERS, provider_class

log = logging.getLogger("cumulus.platform")


def _member_id(path: Path) -> str:
    """This control plane's id, made on first start and kept with its data (a restart is the
    same member, and adopts the instances it started)."""
    if path.exists():
        return path.read_text().strip()
    member = f"cp-{uuid.uuid4().hex[:10]}"
    path.write_text(member + "\n")
    return member

# A small VM: room for a few instances; the VM gets this plus the guest's own overhead.
QEMU_NODE_TYPE = NodeType(name="vm", cpu_millis=1000, memory_mib=768, hourly_cost=0.0, boot_s=90.0)


class Platform:
    """One control plane: everything the API and the loops share."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None, file: FileConfig | None = None,
                 provider: NodeProvider | None = None, use_provider: bool = True) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        data = settings.data_dir
        data.mkdir(parents=True, exist_ok=True)
        self.artifacts_dir = data / "artifacts"
        self.store = Store(settings.db_url)
        admin = self.store.ensure_admin_token()
        if admin is not None:
            write_secret(self.admin_token_path, admin)
            log.info("event=admin_token_created path=%s", self.admin_token_path)
        self.node_token = cluster_node_token(self.store, data / "node.token")
        self.id = settings.control_plane_id or _member_id(data / "control_plane.id")
        self.auth = Authenticator(self.store, self.clock, self.node_token)
        self.fleet = Fleet(self.store, self.clock, heartbeat_interval_s=settings.heartbeat_interval_s,
                           lost_after_s=settings.node_lost_after_s)
        self.gateway = Gateway(self.store, self.fleet, self.clock, node_token=self.node_token,
                               queue_timeout_s=settings.queue_timeout_s,
                               provision_wait_s=settings.provision_wait_s, owner=self.id)
        self.fleet.on_ready = self.gateway.capacity_changed
        self.events = EventLog()
        file = file or FileConfig()
        cpu = settings.node_cpu_millis or int((os.cpu_count() or 1) * 1000 * settings.cpu_overcommit)
        local_type = NodeType(name="local", cpu_millis=cpu,
                              memory_mib=settings.node_memory_mib or default_memory_mib())
        defaults = {"local": local_type, "qemu": QEMU_NODE_TYPE}
        self.node_types = {t.name: t for t in file.node_types}
        if settings.provider not in PROVIDERS:
            raise ProviderError(f"unknown provider {settings.provider!r}; choose one of "
                                f"{', '.join(sorted(PROVIDERS))}")
        if not self.node_types:
            if settings.provider not in defaults:
                raise ProviderError(f"the {settings.provider} provider needs [[node_types]] in a config file")
            default = defaults[settings.provider]
            self.node_types = {default.name: default}
        # Built anew by each control plane process, so new nodes get the code this one runs.
        shutil.rmtree(data / "agent-package", ignore_errors=True)
        self.agent_package = AgentPackage(data / "agent-package")
        if provider is None and use_provider:
            provider = self._build_provider(file)
        self.provider = provider
        self.autoscaler = None if provider is None else FleetAutoscaler(
            provider, self.fleet, self.gateway, self.clock, self.events,
            node_types=self.node_types, policy=FleetPolicy(
                min_nodes=settings.min_nodes, max_nodes=settings.max_nodes,
                high_watermark=settings.high_watermark, low_watermark=settings.low_watermark,
                watermark_window_s=settings.watermark_window_s,
                scale_up_cooldown_s=settings.scale_up_cooldown_s,
                scale_down_cooldown_s=settings.scale_down_cooldown_s),
            join_deadline_s=settings.join_deadline_s, orphan_grace_s=settings.orphan_grace_s)
        self.leadership = Leadership(self.store, self.id, settings.url, ttl_s=settings.lease_ttl_s,
                                     pending=self.gateway.pending, on_elected=self._elected,
                                     on_deposed=self._deposed)
        if self.autoscaler is not None:
            self.gateway.can_grow = self.autoscaler.can_grow
            self.autoscaler.leadership = self.leadership
        self.reconciler = Reconciler(self.gateway, self.fleet, self.store, self.clock,
                                     autoscaler=self.autoscaler, events=self.events,
                                     log_retention=settings.log_retention, leadership=self.leadership)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _elected(self) -> None:
        """This control plane now leads: finish the provider calls the last leader wrote down."""
        self.events.record("leader_elected", f"{self.id} ({self.settings.url}) leads, generation "
                           f"{self.leadership.fence[2] if self.leadership.fence else '?'}")
        if self.autoscaler is not None:
            await self.autoscaler.recover()

    def _deposed(self) -> None:
        self.events.record("leader_deposed", f"{self.id} no longer leads")
        if self.autoscaler is not None:
            self.autoscaler.reset()

    def _build_provider(self, file: FileConfig) -> NodeProvider:
        settings = self.settings
        if settings.provider == "local":
            return LocalProvider(settings.node_root, settings.cluster, AgentBootstrap(
                control_plane_url=settings.url, token=self.node_token, docker_host=settings.docker_host,
                image=settings.image, heartbeat_interval_s=settings.heartbeat_interval_s))
        cls = provider_class(settings.provider)
        kwargs = dict(file.providers.get(settings.provider, {}))
        if settings.provider == "qemu":  # VMs live in node folders, like local agents
            kwargs["root"] = Path(kwargs.get("root", settings.node_root))
        try:
            return cast(NodeProvider, cls(settings.cluster, self.bootstrap_for, **kwargs))
        except TypeError as exc:
            raise ProviderError(f"[provider.{settings.provider}] in the config does not fit: {exc}") from exc

    def bootstrap_for(self, request_id: str) -> NodeBootstrap:
        """The bootstrap of a provision request: a fresh single-use join token and where to get
        the agent (providers call this from their own threads)."""
        assert self.provider is not None
        token = self.store.issue_join_token(request_id, self.provider.name, "",
                                            ttl_s=self.settings.join_token_ttl_s)
        wheel = self.agent_package.wheel()
        return NodeBootstrap(control_plane_url=self.settings.url, join_token=token,
                             agent_package=f"{self.settings.url}/v1/agent/package/{wheel.name}",
                             runtime_image=self.settings.image)

    def share_artifact(self, digest: str) -> None:
        """Copy a freshly built artifact into the database, for the other control planes."""
        self.store.put_artifact(digest, (self.artifacts_dir / f"{digest}.zip").read_bytes())

    def artifact_path(self, digest: str) -> Path | None:
        """The local file of an artifact, fetched from the database when another control plane
        built it; None if no version has it."""
        path = self.artifacts_dir / f"{digest}.zip"
        if path.is_file():
            return path
        data = self.store.artifact(digest)
        if data is None:
            return None
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{digest}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path

    @property
    def admin_token_path(self) -> Path:
        """Where the admin token is written on first start."""
        return self.settings.data_dir / "admin.token"

    async def start(self) -> None:
        """Load state, join the control planes (leading at once if no other does), start the loops."""
        self.fleet.load()
        await self.gateway.open()
        await self.reconciler.recover_instances()
        await self.reconciler.load_functions()
        await self.leadership.tick()
        self._stop.clear()
        interval = self.settings.reconcile_interval_s
        self._tasks = [asyncio.create_task(self.reconciler.run(interval, self._stop)),
                       asyncio.create_task(self.leadership.run(self._stop))]

    async def stop(self) -> None:
        """Stop the loops, hand leadership over, flush logs and close connections (nodes keep
        running)."""
        self._stop.set()
        for task in self._tasks:
            await task
        try:
            await self.leadership.leave()
        except Exception as exc:  # the database may be gone: the lease then simply expires
            log.warning("event=leave_failed error=%r", exc)
        await self.reconciler.flush_logs()
        await self.gateway.close()

    def control_plane_urls(self) -> list[str]:
        """Where the cluster's live control planes are (node agents report to each)."""
        return sorted({m.url for m in self.leadership.members} | {self.settings.url})

    async def terminate_nodes(self) -> None:
        """Terminate every node of the provider (used when `cumulus up` exits), unless other
        control planes of the cluster still serve (HA): the fleet is theirs then."""
        if self.provider is None:
            return
        alive_after = time.time() - 3 * self.settings.lease_ttl_s
        others = [m.id for m in await asyncio.to_thread(self.store.members, alive_after) if m.id != self.id]
        if others:
            log.info("event=nodes_kept reason=other_control_planes members=%s", ",".join(others))
            return
        nodes = await asyncio.to_thread(self.provider.list_instances)
        if nodes:
            await asyncio.to_thread(self.provider.terminate, [n.id for n in nodes], request_id="shutdown")
