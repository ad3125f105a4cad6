"""The control plane's parts wired together: store, fleet, gateway, reconciler, provider."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path
from typing import cast

from control_plane.agent_package import AgentPackage
from control_plane.auth import Authenticator, load_or_create_node_token, write_secret
from control_plane.autoscaler import FleetAutoscaler
from control_plane.clock import Clock, SystemClock
from control_plane.config import FileConfig
from control_plane.events import EventLog
from control_plane.fleet import Fleet
from control_plane.gateway import Gateway
from control_plane.reconciler import Reconciler
from control_plane.settings import Settings
from control_plane.store import Store
from node_agent.settings import default_memory_mib
from placement.fleet import FleetPolicy
from provisioners.base import NodeBootstrap, NodeProvider, NodeType, ProviderError
from provisioners.local import AgentBootstrap, LocalProvider
from provisioners.registry import PROVIDERS, provider_class

log = logging.getLogger("cumulus.platform")

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
        self.node_token = load_or_create_node_token(data / "node.token")
        self.auth = Authenticator(self.store, self.clock, self.node_token)
        self.fleet = Fleet(self.store, self.clock, heartbeat_interval_s=settings.heartbeat_interval_s,
                           lost_after_s=settings.node_lost_after_s)
        self.gateway = Gateway(self.store, self.fleet, self.clock, node_token=self.node_token,
                               queue_timeout_s=settings.queue_timeout_s,
                               provision_wait_s=settings.provision_wait_s)
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
        if self.autoscaler is not None:
            self.gateway.can_grow = self.autoscaler.can_grow
        self.reconciler = Reconciler(self.gateway, self.fleet, self.store, self.clock,
                                     autoscaler=self.autoscaler, events=self.events,
                                     log_retention=settings.log_retention)
        self._stop = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    def _build_provider(self, file: FileConfig) -> NodeProvider:
        settings = self.settings
        if settings.provider == "local":
            return LocalProvider(settings.data_dir / "nodes", settings.cluster, AgentBootstrap(
                control_plane_url=settings.url, token=self.node_token, docker_host=settings.docker_host,
                image=settings.image, heartbeat_interval_s=settings.heartbeat_interval_s))
        cls = provider_class(settings.provider)
        kwargs = dict(file.providers.get(settings.provider, {}))
        if settings.provider == "qemu":  # VMs live in node folders, like local agents
            kwargs["root"] = Path(kwargs.get("root", settings.data_dir / "nodes"))
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

    @property
    def admin_token_path(self) -> Path:
        """Where the admin token is written on first start."""
        return self.settings.data_dir / "admin.token"

    async def start(self) -> None:
        """Load state and start the reconcile loop."""
        self.fleet.load()
        await self.gateway.open()
        await self.reconciler.load_functions()
        if self.autoscaler is not None:
            await self.autoscaler.recover()
        self._stop.clear()
        self._loop_task = asyncio.create_task(
            self.reconciler.run(self.settings.reconcile_interval_s, self._stop))

    async def stop(self) -> None:
        """Stop the loop, flush logs and close connections (nodes keep running)."""
        self._stop.set()
        if self._loop_task is not None:
            await self._loop_task
        await self.reconciler.flush_logs()
        await self.gateway.close()

    async def terminate_nodes(self) -> None:
        """Terminate every node of the provider (used when `cumulus up` exits)."""
        if self.provider is None:
            return
        nodes = await asyncio.to_thread(self.provider.list_instances)
        if nodes:
            await asyncio.to_thread(self.provider.terminate, [n.id for n in nodes], request_id="shutdown")
