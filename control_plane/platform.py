"""The composition root: builds every part of one control plane, wires them, starts and stops them
in order. The only module that sees every room; the rooms see only what it hands them."""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import time
from pathlib import Path

from cachetools import TTLCache

from control_plane.cluster import Leadership, member_id
from control_plane.core import (
    BuildUnavailable,
    Clock,
    ConfigError,
    FileConfig,
    FunctionNotFound,
    NotFound,
    Settings,
    SystemClock,
    private_dir,
)
from control_plane.eventbus import EventBus
from control_plane.fleet import AgentPackage, Fleet, FleetAutoscaler, Joins, build_provider, node_types
from control_plane.functions import (
    Builder,
    BuildLimits,
    DeployedVersion,
    DockerBuildSandbox,
    FunctionService,
    Progress,
)
from control_plane.gateway import Gateway, HttpAgentClient, InvokeEndpoint
from control_plane.identity import (
    NODE_KEY_SEED,
    Accounts,
    Authenticator,
    FunctionRef,
    Governor,
    NodeKeys,
    SecretBox,
    write_secret,
)
from control_plane.jobs import AsyncCalls, AsyncSettings, JobQueue, NatsQueue, Outcome, StoreQueue
from control_plane.metering import Metering, PriceSheet
from control_plane.reconcile import Reconciler
from control_plane.schedules import Schedules
from control_plane.services import Mailer
from control_plane.store import InstanceIntent, Store
from control_plane.telemetry import Telemetry
from control_plane.workflows import Workflows
from node_agent.image import DEFAULT_RUNTIME, RUNTIMES, ImageBuildError, rootfs_cached, runtime_rootfs
from placement import FleetPolicy
from provisioners.base import NodeProvider

log = logging.getLogger("cumulus.platform")

ASYNC_SETTINGS_TTL_S = 2.0  # how long an async call's worker uses a function's settings it read


class GatewayRecords:
    """The gateway's `GatewayStore`: function versions through the function service, instance
    intents in the store."""

    def __init__(self, store: Store, functions: FunctionService) -> None:
        self.store = store
        self.functions = functions

    def latest_version(self, name: str) -> DeployedVersion:
        """The latest version of `name` (FunctionNotFound if unknown)."""
        return self.functions.latest_version(name)

    def open_instance_intent(self, instance_id: str, *, owner: str, kind: str, function: str,
                             node_id: str, node_url: str) -> None:
        """Write an instance start or stop down."""
        self.store.open_instance_intent(InstanceIntent(instance_id=instance_id, owner=owner, kind=kind,
                                                       function=function, node_id=node_id, node_url=node_url))

    def close_instance_intent(self, instance_id: str, kind: str) -> None:
        """Close an instance intent."""
        self.store.close_instance_intent(instance_id, kind)


class Platform:
    """One control plane: everything the API and the loops share (it satisfies `api.Services`)."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None, file: FileConfig | None = None,
                 provider: NodeProvider | None = None, use_provider: bool = True) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        file = file or FileConfig()
        data = settings.data_dir
        private_dir(data)
        self.store = Store(settings.db_url)
        admin = self.store.ensure_admin_token()
        if admin is not None:
            write_secret(self.admin_token_path, admin)
            log.info("event=admin_token_created path=%s", self.admin_token_path)
        self.box = SecretBox.load(key=settings.secret_key, key_file=settings.secret_key_file, data_dir=data)
        self.box.check(self.store)
        self.keys = NodeKeys(self.box.shared(self.store, NODE_KEY_SEED, secrets.token_hex(32)).encode())
        self.id = settings.control_plane_id or member_id(data / "control_plane.id")
        # Tenants' runtime quotas, each control plane admitting its share of the live ones'.
        self.governor = Governor(self.clock, peers=self._live_control_planes)
        self.mailer = Mailer(settings.mail_relay, sender=settings.mail_from, governor=self.governor,
                             per_min=settings.mail_per_min, timeout_s=settings.mail_timeout_s)
        self.auth = Authenticator(self.store, self.clock, governor=self.governor)
        self.accounts = Accounts(self.store, changed=self.auth.changed)
        self.telemetry = Telemetry(self.store, log_retention=settings.log_retention)
        try:
            prices = PriceSheet.from_config(file.billing)
        except ValueError as exc:
            raise ConfigError(f"the config file's [billing] table: {exc}") from exc
        self.metering = Metering(self.store, self.keys, prices, self.telemetry.events.record, self.clock,
                                 changed=self.auth.changed)
        # Requirements install in a throw-away container of the runtime image, never here.
        limits = BuildLimits(memory_mib=settings.build_memory_mib, cpu_millis=settings.build_cpu_millis,
                             disk_mib=settings.build_disk_mib, output_mib=settings.build_output_mib,
                             timeout_s=settings.build_timeout_s)
        build_dir = data / "build"
        for stale in build_dir.glob("*-*"):  # what a crashed build left
            shutil.rmtree(stale, ignore_errors=True)
        # Each runtime's image: built from Debian's mirror (cached by recipe), or the operator's own
        # for the default runtime; nodes whose engine lacks one fetch its rootfs from here.
        self.runtime_images = {name: recipe.tag for name, recipe in RUNTIMES.items()}
        if settings.image:
            self.runtime_images[DEFAULT_RUNTIME] = settings.image
        self.build_sandboxes = {name: DockerBuildSandbox(settings.docker_host, image, build_dir / "tools",
                                                         limits=limits, owner=self.id,
                                                         recipe=None if image == settings.image
                                                         else RUNTIMES[name])
                                for name, image in self.runtime_images.items()}
        self.build_sandbox = self.build_sandboxes[DEFAULT_RUNTIME]
        builder = Builder(self.build_sandboxes.__getitem__, build_dir, limits=limits,
                          max_concurrent=settings.build_concurrency, cache_mib=settings.build_cache_mib)
        self.functions = FunctionService(self.store, data / "artifacts", self.box, builder,
                                         default_network=settings.default_network,
                                         prepare_runtime=self._prepare_runtime)
        self.fleet = Fleet(self.store, self.clock, heartbeat_interval_s=settings.heartbeat_interval_s,
                           lost_after_s=settings.node_lost_after_s)
        self.fleet.placed_on = self.keys.placed_on
        self.gateway = Gateway(GatewayRecords(self.store, self.functions), self.fleet, self.clock,
                               agents=HttpAgentClient(self.keys.agent_key),
                               records=self.telemetry.invocations, instance_id=self.keys.instance_id,
                               queue_timeout_s=settings.queue_timeout_s,
                               provision_wait_s=settings.provision_wait_s, owner=self.id,
                               runtime_images=self.runtime_images)
        self.gateway.governor = self.governor
        self.gateway.usage_witnessed = self.metering.ingest_witnessed
        # Async calls: a durable queue (the database, or a NATS JetStream server), run by the
        # workers of every control plane through the same gateway and quotas as a synchronous call.
        lease_s = settings.job_lease_s
        self.jobs: JobQueue = (NatsQueue(settings.queue_url, lease_s=lease_s) if settings.queue_url
                               else StoreQueue(self.store, lease_s=lease_s))
        self._async_settings_cache: TTLCache[str, tuple[AsyncSettings | None]] = TTLCache(
            10_000, ASYNC_SETTINGS_TTL_S)
        self.async_calls = AsyncCalls(self.store, self.jobs, self._run_async, self._async_settings,
                                      concurrency=settings.async_concurrency,
                                      retry_base_s=settings.async_retry_base_s)
        self.schedules = Schedules(self.store, self.async_calls.enqueue)
        self.workflows = Workflows(self.store, self.jobs, self._run_async,
                                   concurrency=settings.async_concurrency)
        self.bus = EventBus(self.store, self.async_calls.enqueue, start_workflow=self.workflows.start)
        self.invoke = InvokeEndpoint(self.gateway, self.auth.invoker, self.governor,
                                     enqueue=lambda fn, event, key: self.async_calls.enqueue(
                                         fn.key, fn.tenant, event, key=key))
        self.node_types = node_types(settings, file)
        # Built anew by each control plane process, so new nodes get the code this one runs.
        shutil.rmtree(data / "agent-package", ignore_errors=True)
        self.agent_package = AgentPackage(data / "agent-package")
        self.joins = Joins(self.store, self.fleet, url=settings.url, keys=self.keys,
                           runtime_image=settings.image, agent_package=self.agent_package,
                           token_ttl_s=settings.join_token_ttl_s, provider=settings.provider)
        if provider is None and use_provider:
            provider = build_provider(settings, file, bootstrap_for=self.joins.bootstrap_for,
                                      agent_package=self.agent_package)
        self.provider = provider
        if provider is not None:
            self.joins.provider = provider.name  # recorded with each join token
        self.leadership = Leadership(self.store, self.id, settings.url, ttl_s=settings.lease_ttl_s,
                                     pending=self.gateway.pending, on_elected=self._elected,
                                     on_deposed=self._deposed)
        self.autoscaler = None if provider is None else FleetAutoscaler(
            provider, self.fleet, self.gateway, self.store, self.clock, self.telemetry.events,
            node_types=self.node_types, policy=FleetPolicy(
                min_nodes=settings.min_nodes, max_nodes=settings.max_nodes,
                high_watermark=settings.high_watermark, low_watermark=settings.low_watermark,
                watermark_window_s=settings.watermark_window_s,
                scale_up_cooldown_s=settings.scale_up_cooldown_s,
                scale_down_cooldown_s=settings.scale_down_cooldown_s,
                failure_backoff_s=settings.failure_backoff_s),
            join_deadline_s=settings.join_deadline_s or provider.boot_deadline_s,
            orphan_grace_s=settings.orphan_grace_s)
        if self.autoscaler is not None:
            self.gateway.can_grow = self.autoscaler.can_grow
            self.gateway.trouble = self.autoscaler.trouble
            self.autoscaler.leadership = self.leadership
        self.reconciler = Reconciler(self.gateway, self.fleet, self.store, self.functions, self.clock,
                                     autoscaler=self.autoscaler, telemetry=self.telemetry,
                                     leadership=self.leadership)
        self.fleet.on_ready = self._node_ready
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _run_async(self, key: str, event: bytes, call_id: str) -> Outcome:
        """One attempt of an async call: the tenant's quotas, then the gateway, as a sync call."""
        tenant = FunctionRef.of_key(key).tenant
        self.governor.admit(tenant)
        try:
            result = await self.gateway.invoke(key, event, call_id)
        finally:
            self.governor.leave(tenant)
        return Outcome(result.status, result.body)

    def _async_settings(self, key: str) -> AsyncSettings | None:
        """A function's async settings, from its latest version (None once it is deleted); read
        again after `ASYNC_SETTINGS_TTL_S` (a redeploy's retries and destinations apply to the
        attempts that start after that: one store read per function then, not one per attempt)."""
        found = self._async_settings_cache.get(key)
        if found is not None:
            return found[0]
        try:
            config = self.functions.latest_version(key).config
        except FunctionNotFound:
            settings = None
        else:
            settings = AsyncSettings(tenant=FunctionRef.of_key(key).tenant, max_retries=config.max_retries,
                                     max_event_age_s=config.max_event_age_s, on_success=config.on_success,
                                     on_failure=config.on_failure)
        self._async_settings_cache[key] = (settings,)
        return settings

    def _node_ready(self) -> None:
        """A node reported ready: adopt what it runs, then wake the calls waiting for room."""
        self.reconciler.adopt()
        self.gateway.room_changed()

    async def _elected(self) -> None:
        """This control plane now leads: finish the provider calls the last leader wrote down."""
        self.telemetry.events.record("leader_elected", f"{self.id} ({self.settings.url}) leads, generation "
                                     f"{self.leadership.fence[2] if self.leadership.fence else '?'}")
        if self.autoscaler is not None:
            await self.autoscaler.recover()

    def _deposed(self) -> None:
        self.telemetry.events.record("leader_deposed", f"{self.id} no longer leads")
        if self.autoscaler is not None:
            self.autoscaler.reset()

    def _leads(self) -> bool:
        return self.leadership.is_leader

    @property
    def admin_token_path(self) -> Path:
        """Where the admin token is written on first start."""
        return self.settings.data_dir / "admin.token"

    async def start(self) -> None:
        """Load state, join the control planes (leading at once if no other does), start the loops."""
        removed = await asyncio.to_thread(self.build_sandbox.cleanup)
        if removed:
            log.info("event=build_containers_removed count=%d", removed)
        self.fleet.load()
        await self.gateway.open()
        await self.reconciler.recover_instances()
        await self.reconciler.load_functions()
        await self.leadership.tick()
        self._stop.clear()
        interval = self.settings.reconcile_interval_s
        await self.auth.refresh()
        self._tasks = [asyncio.create_task(self.reconciler.run(interval, self._stop)),
                       asyncio.create_task(self.auth.watch(self._stop)),
                       asyncio.create_task(self.leadership.run(self._stop)),
                       asyncio.create_task(self.metering.watch_budgets(
                           self._stop, self.settings.budget_check_interval_s, self._leads)),
                       asyncio.create_task(self.async_calls.serve(self._stop)),
                       asyncio.create_task(self.schedules.run(self._stop)),
                       asyncio.create_task(self.workflows.serve(self._stop))]

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
        await self.telemetry.flush()
        await self.jobs.close()
        if self.autoscaler is not None:
            self.autoscaler.close()
        await self.gateway.close()

    def _prepare_runtime(self, runtime: str, progress: Progress | None) -> None:
        """At a deploy, best effort: the runtime's rootfs is built (once per recipe, the first deploy
        of a runtime waits for it), so that nodes lacking the image can fetch it from here. A control
        plane that cannot build it (no mmdebstrap) deploys anyway: nodes then need the image."""
        recipe = RUNTIMES[runtime]
        if self.runtime_images.get(runtime) != recipe.tag or rootfs_cached(recipe):
            return
        if shutil.which("mmdebstrap") is None:
            log.warning("event=runtime_not_built runtime=%s reason=no_mmdebstrap", runtime)
            return
        if progress is not None:
            progress(f"building the {runtime} runtime image from Debian's mirror (once)")
        try:
            runtime_rootfs(recipe)
        except ImageBuildError as exc:
            log.warning("event=runtime_not_built runtime=%s error=%s", runtime, exc)

    def runtime_rootfs(self, runtime: str) -> Path:
        """The rootfs tarball of a runtime's image, for nodes whose engine lacks it (built from
        Debian's mirror on first use, cached by recipe); NotFound for an unknown runtime or one the
        operator runs from an image of their own (their nodes must hold it)."""
        recipe = RUNTIMES.get(runtime)
        if recipe is None or self.runtime_images.get(runtime) != recipe.tag:
            raise NotFound(f"no runtime rootfs {runtime[:40]!r} here")
        try:
            return runtime_rootfs(recipe)
        except ImageBuildError as exc:
            raise BuildUnavailable(f"the {runtime} runtime image cannot be built: {exc}") from exc

    def _live_control_planes(self) -> int:
        return len(self.leadership.live_ids())

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
