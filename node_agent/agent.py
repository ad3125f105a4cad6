"""The node agent's core: instances on this node, their lifecycle, and the invocation proxy."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import logging
import shutil
import tempfile
import time
import zipfile
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp

from node_agent import protocol as p
from node_agent.egress import EgressPolicy, policy_for
from node_agent.meter import UsageMeter
from node_agent.runtime import (
    LABEL_NODE,
    LABEL_OWNER,
    LABEL_PACKAGE,
    ContainerInfo,
    ContainerRuntime,
    ContainerRuntimeError,
    ContainerSpec,
)
from node_agent.runtime_api import RuntimeApiInitError, RuntimeApiSession
from node_agent.services import ServicesServer, error_body
from node_agent.shim import cumulus_wire as wire
from node_agent.shim_client import ShimAnswerTooLarge, ShimClient, ShimConnectionError

log = logging.getLogger("cumulus.agent")

SHIM_DIR = Path(__file__).parent / "shim"
# Like Lambda's init phase, an instance gets at least a full core while it starts (Python start and
# the user's imports), then its own quota: a 250m quota would otherwise stretch a 30 ms start to 100+.
INIT_CPU_MILLIS = 1000
RUNTIME_API_PORT = 9001  # where an image function's process finds the Runtime API (its own loopback)
USAGE_WAIT_S = 2.0  # how long a stop waits for its instance's usage record to be stored
SERVICE_TIMEOUT_S = 30.0  # a control plane's answer to a service request (mail: the relay's)


class InstanceState(enum.StrEnum):
    """Lifecycle of an instance on its node."""

    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"


class InstanceStartError(Exception):
    """The instance could not be started (bad code, engine failure, never became ready)."""


class NodeFull(InstanceStartError):
    """The node has no room for the instance (control planes sharing it placed at once)."""


@dataclass(eq=False)
class Instance:
    """One running function container and the kept-alive connections to its socket."""

    instance_id: str
    function: str
    version: int
    memory_mib: int
    cpu_millis: int
    concurrency: int
    socket_path: Path
    state: InstanceState = InstanceState.STARTING
    in_flight: int = 0
    start_ms: float = 0.0
    owner: str = ""
    shim: ShimClient | None = None
    session: RuntimeApiSession | None = None  # an image function's Runtime API
    services: ServicesServer | None = None  # `context.services`, on a socket in its own folder
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    # Metering: when it started (wall clock), how long calls kept it busy, whether a call paid its start.
    started_at: float = field(default_factory=time.time)
    busy_ms: float = 0.0
    busy_since: float = 0.0
    init_billed: bool = False

    def enter(self) -> None:
        """A call starts on this instance."""
        if self.in_flight == 0:
            self.busy_since = time.perf_counter()
        self.in_flight += 1

    def leave(self) -> None:
        """A call on this instance ended."""
        self.in_flight -= 1
        if self.in_flight == 0:
            self.busy_ms += (time.perf_counter() - self.busy_since) * 1000

    def take_init_ms(self, cold: bool) -> float:
        """The start-up time the call that waited for this instance's start is charged (once)."""
        if not cold or self.init_billed:
            return 0.0
        self.init_billed = True
        return self.start_ms

    def report(self) -> p.InstanceReport:
        """This instance in heartbeat form."""
        return p.InstanceReport(instance_id=self.instance_id, function=self.function,
                                version=self.version, state=self.state.value,
                                memory_mib=self.memory_mib, cpu_millis=self.cpu_millis,
                                concurrency=self.concurrency, in_flight=self.in_flight,
                                start_ms=self.start_ms, owner=self.owner)


def outcome_response_parts(outcome: str, message: str, *, gone: bool) -> tuple[dict[str, str], bytes]:
    """Headers and body of an agent-made outcome, framed like the shim's answers."""
    body = json.dumps({"type": outcome, "message": message}).encode()
    headers = {p.OUTCOME_HEADER: outcome, p.LOG_BYTES_HEADER: "0", "Content-Type": "application/json"}
    if gone:
        headers[p.INSTANCE_GONE_HEADER] = "1"
    return headers, body


class NodeAgent:
    """Runs instances through a `ContainerRuntime` and proxies invocations to them."""

    def __init__(self, *, node_id: str, runtime: ContainerRuntime, data_dir: Path, image: str,
                 agent_key: str, credential: str, start_timeout_s: float = 60.0, control_plane_url: str = "",
                 capacity: tuple[int, int] | None = None, egress_network: str = "cumulus-egress",
                 egress_deny: Sequence[str] = (), agent_port: int = 0,
                 gate_binary: Path = Path("/bin/busybox"), meter: UsageMeter | None = None) -> None:
        self.node_id = node_id
        self.runtime = runtime
        self.data_dir = data_dir
        self.image = image
        self.agent_key = agent_key  # what callers of this agent present
        self.credential = credential  # what this agent presents to control planes
        self.start_timeout_s = start_timeout_s
        self.control_plane_url = control_plane_url.rstrip("/")
        self.control_planes = [self.control_plane_url]  # every live one, learned from heartbeats
        self.capacity = capacity  # (cpu millis, memory MiB) it refuses to exceed; None: no check
        self.instances: dict[str, Instance] = {}
        self._code_locks: dict[str, asyncio.Lock] = {}
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.egress_network = egress_network
        self.egress_deny = tuple(egress_deny)
        self.agent_port = agent_port
        self.gate_binary = gate_binary  # a static busybox: holds an image's process until it may run
        self._policy: tuple[float, tuple[str, ...], EgressPolicy] | None = None
        self._own_subnets: tuple[str, ...] | None = None  # the egress network's, once it is made
        self._network_lock = asyncio.Lock()  # the instances starting at once make it once
        self._image_locks: dict[str, asyncio.Lock] = {}
        # Images known to be in the engine (a zip cold start asks no engine call for its runtime's);
        # one removed behind the agent's back fails its start, which says so, and is looked up again.
        self._images_seen: set[str] = set()
        (data_dir / "code").mkdir(parents=True, exist_ok=True)
        self.meter = meter if meter is not None else UsageMeter(data_dir / "usage.jsonl")

    async def open(self) -> None:
        """Open HTTP sessions and adopt the containers this node already runs."""
        self._http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.credential}"})
        await self.recover()

    async def close(self, *, remove_instances: bool) -> None:
        """Close sessions; on a graceful stop also remove every instance."""
        if remove_instances:
            await asyncio.gather(*(self.stop(i) for i in list(self.instances)), return_exceptions=True)
        for inst in self.instances.values():
            if inst.shim is not None:
                inst.shim.close()
            if inst.session is not None:
                await inst.session.close()
            await self._close_services(inst)
        if self._http is not None:
            await self._http.close()

    async def recover(self) -> None:
        """Rebuild state from container labels: adopt live instances, remove dead ones."""
        found = await asyncio.to_thread(self.runtime.list, {LABEL_NODE: self.node_id})
        for info in found:
            sock = self.runtime.socket_path(info)
            # An image's Runtime API lived in the agent that started it: its process cannot go on.
            image_fn = info.labels.get(LABEL_PACKAGE) == "image"
            if info.running and not image_fn and sock.exists():
                inst = self._adopt(info, sock)
                await self._open_services(inst, sock.parent)
                log.info("event=instance_adopted instance=%s function=%s", inst.instance_id, inst.function)
            else:
                await asyncio.to_thread(self.runtime.remove, info.instance_id)
                log.info("event=instance_removed_on_recover instance=%s", info.instance_id)

    async def sweep(self) -> list[str]:
        """Remove this node's containers that belong to no instance of this agent, and say which.

        An instance is in `instances` before its container is made and until it is removed, so a
        container outside it is one the engine made after the agent gave up on its create (an
        engine slow to answer), or one whose removal failed; left alone it would hold memory and
        run code nobody calls."""
        found = await asyncio.to_thread(self.runtime.list, {LABEL_NODE: self.node_id})
        removed = []
        for info in found:
            if not info.instance_id or info.instance_id in self.instances:
                continue
            try:
                await asyncio.to_thread(self.runtime.remove, info.instance_id)
            except ContainerRuntimeError as exc:
                log.warning("event=stray_container_not_removed instance=%s error=%s", info.instance_id, exc)
                continue
            removed.append(info.instance_id)
            log.warning("event=stray_container_removed instance=%s function=%s", info.instance_id,
                        info.function)
        return removed

    def _adopt(self, info: ContainerInfo, sock: Path) -> Instance:
        labels = info.labels
        inst = Instance(info.instance_id, info.function, info.version,
                        memory_mib=int(labels.get("io.cumulus.memory", "0") or 0),
                        cpu_millis=int(labels.get("io.cumulus.cpu", "0") or 0),
                        concurrency=int(labels.get("io.cumulus.concurrency", "1") or 1),
                        socket_path=sock, state=InstanceState.READY, owner=labels.get(LABEL_OWNER, ""))
        inst.shim = ShimClient(str(sock))
        inst.init_billed = True  # started (and metered) before this agent: its lifetime counts from now
        inst.ready.set()
        self.instances[inst.instance_id] = inst
        return inst

    def allocated(self) -> tuple[int, int]:
        """(cpu millis, memory MiB) held by this node's instances."""
        cpu = sum(i.cpu_millis for i in self.instances.values())
        mem = sum(i.memory_mib for i in self.instances.values())
        return cpu, mem

    # -- code ------------------------------------------------------------------------------
    async def ensure_code(self, digest: str, url: str) -> Path:
        """The extracted code of `digest`, fetched from the control plane on first use."""
        target = self.data_dir / "code" / digest
        if target.exists():
            return target
        # A path is on a control plane, as this node reaches it: the configured one first, then
        # the others it learned of (HA: every control plane serves every artifact).
        urls = self._urls(url)
        lock = self._code_locks.setdefault(digest, asyncio.Lock())
        async with lock:
            if target.exists():
                return target
            assert self._http is not None
            tmpdir = Path(tempfile.mkdtemp(prefix=f"{digest}.", dir=self.data_dir / "code"))
            try:
                archive = tmpdir / "code.zip"
                await self._download(urls, archive, digest)
                if len(digest) == 64:  # a SHA-256: what arrived must be what was deployed
                    got = await asyncio.to_thread(_sha256, archive)
                    if got != digest:
                        raise InstanceStartError(f"artifact {digest} arrived with the digest {got}")
                await asyncio.to_thread(_extract, archive, tmpdir / "code")
                (tmpdir / "code").rename(target)
            finally:
                shutil.rmtree(tmpdir, ignore_errors=True)
        return target

    def _urls(self, url: str) -> list[str]:
        """Where a control-plane path is, as this node reaches it (every live control plane)."""
        if not url.startswith("/"):
            return [url]
        return [base + url for base in dict.fromkeys([self.control_plane_url, *self.control_planes])]

    async def ensure_image(self, reference: str, url: str, *, archive: bool = False) -> str:
        """`reference` in this node's engine, fetched from the control plane (`url`: a rootfs, or with
        `archive` a `docker save` archive) and loaded on first use."""
        if reference in self._images_seen:
            return reference
        if await asyncio.to_thread(self.runtime.has_image, reference):
            self._images_seen.add(reference)
            return reference
        if not url:
            raise InstanceStartError(f"the image {reference} is not on this node")
        lock = self._image_locks.setdefault(reference, asyncio.Lock())
        async with lock:
            if await asyncio.to_thread(self.runtime.has_image, reference):
                self._images_seen.add(reference)
                return reference
            folder = self.data_dir / "images"
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                tarball = Path(tmp) / "image.tar"
                await self._download(self._urls(url), tarball, reference)
                await asyncio.to_thread(self.runtime.import_image, tarball, reference, rootfs=not archive)
            self._images_seen.add(reference)
            log.info("event=image_fetched image=%s", reference)
        return reference

    async def _egress(self) -> EgressPolicy:
        """This node's egress policy (its addresses and control planes change rarely: kept 30 s)."""
        planes = tuple(dict.fromkeys([self.control_plane_url, *self.control_planes]))
        now = time.monotonic()
        if self._policy is not None and self._policy[1] == planes and now - self._policy[0] < 30:
            return self._policy[2]
        async with self._network_lock:
            if self._own_subnets is None:
                self._own_subnets = await asyncio.to_thread(self.runtime.prepare_network, self.egress_network)
        own = self._own_subnets
        policy = await asyncio.to_thread(policy_for, control_planes=planes, agent_port=self.agent_port,
                                         extra=self.egress_deny, own_subnets=own)
        self._policy = (now, planes, policy)
        return policy

    async def _download(self, urls: list[str], archive: Path, digest: str) -> None:
        assert self._http is not None
        problems = []
        for url in urls:
            try:
                async with self._http.get(url) as resp:
                    if resp.status != 200:
                        problems.append(f"{url}: HTTP {resp.status}")
                        continue
                    with archive.open("wb") as fh:
                        async for chunk in resp.content.iter_chunked(1 << 16):
                            fh.write(chunk)
                    return
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                problems.append(f"{url}: {exc}")
        raise InstanceStartError(f"fetching {digest}: {'; '.join(problems)}")

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, instance_id: str, req: p.InstanceStart) -> Instance:
        """Start an instance and return once it accepts invocations (idempotent by id)."""
        existing = self.instances.get(instance_id)
        if existing is not None:
            await asyncio.wait_for(existing.ready.wait(), self.start_timeout_s)
            if existing.state is not InstanceState.READY:
                raise InstanceStartError(f"instance {instance_id} is {existing.state}")
            return existing
        if self.capacity is not None:
            cpu, mem = self.allocated()
            if cpu + req.cpu_millis > self.capacity[0] or mem + req.memory_mib > self.capacity[1]:
                raise NodeFull(f"node {self.node_id} has {self.capacity[0] - cpu}m CPU and "
                               f"{self.capacity[1] - mem} MiB free; {req.function} needs "
                               f"{req.cpu_millis}m and {req.memory_mib} MiB")
        t0 = time.perf_counter()
        inst = Instance(instance_id, req.function, req.version, req.memory_mib, req.cpu_millis,
                        req.concurrency, Path(), owner=req.owner)  # its socket: once it runs
        self.instances[instance_id] = inst
        try:
            if req.package_type == "image":
                await self._start_image(inst, req)
            else:
                await self._start_zip(inst, req)
        except BaseException as exc:
            self.instances.pop(instance_id, None)
            self._images_seen.discard(req.image)  # looked up again next time
            inst.ready.set()
            if inst.session is not None:
                await inst.session.close()
            await self._close_services(inst)
            await asyncio.to_thread(self.runtime.remove, instance_id)
            if isinstance(exc, InstanceStartError | asyncio.CancelledError):
                raise
            raise InstanceStartError(f"instance {instance_id} of {req.function}: {exc}") from exc
        if inst.session is None:
            inst.shim = ShimClient(str(inst.socket_path))
        inst.start_ms = (time.perf_counter() - t0) * 1000
        inst.state = InstanceState.READY
        inst.ready.set()
        log.info("event=instance_ready instance=%s function=%s version=%s start_ms=%.1f",
                 instance_id, req.function, req.version, inst.start_ms)
        return inst

    def _env(self, req: p.InstanceStart) -> dict[str, str]:
        env = dict(req.env)
        env.update({"CUMULUS_HANDLER": req.handler, "CUMULUS_FUNCTION_NAME": req.function,
                    "CUMULUS_FUNCTION_VERSION": str(req.version), "CUMULUS_MEMORY_MB": str(req.memory_mib),
                    "CUMULUS_CONCURRENCY": str(req.concurrency),
                    "CUMULUS_SERVICES_SOCKET": f"{wire.SOCKET_DIR}/{wire.SERVICES_NAME}"})
        return env

    # -- services ------------------------------------------------------------------------------
    async def _open_services(self, inst: Instance, folder: Path) -> None:
        """Serve `context.services` to the instance, in its socket folder. A failure is logged, not
        fatal: the function runs, and its calls to a service answer ServiceUnavailable."""
        server = ServicesServer(instance_id=inst.instance_id, function=inst.function,
                                forward=self._forward_service)
        try:
            await server.start(folder)
        except OSError as exc:
            log.warning("event=services_not_served instance=%s error=%r", inst.instance_id, exc)
            return
        inst.services = server

    async def _close_services(self, inst: Instance) -> None:
        server, inst.services = inst.services, None
        if server is not None:
            await server.close()

    async def _forward_service(self, route: str, body: bytes,
                               headers: Mapping[str, str]) -> tuple[int, bytes, Mapping[str, str]]:
        """A service request to a control plane (the configured one, then the others): its answer,
        or 503 ServiceUnavailable when none answered."""
        assert self._http is not None
        timeout = aiohttp.ClientTimeout(total=SERVICE_TIMEOUT_S)
        last = "no control plane is known"
        for url in self._urls(route):
            try:
                async with self._http.post(url, data=body, headers=headers, timeout=timeout) as resp:
                    answer = await resp.content.read(wire.MAX_SERVICE_REQUEST_BYTES)
                    return resp.status, answer, dict(resp.headers)
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{url}: {exc!r}"
        return 503, error_body("ServiceUnavailable", f"no control plane answered the node: {last}"), {}

    async def _start_image(self, inst: Instance, req: p.InstanceStart) -> None:
        """An image's own process, held until its Runtime API listens in its namespace (and its
        egress rules are in), then ready once it asks for its first event."""
        if not is_static_executable(self.gate_binary):
            raise InstanceStartError(f"this node cannot run image functions: {self.gate_binary} is not a "
                                     "statically linked busybox (Debian's busybox-static)")
        image = await self.ensure_image(req.image, req.image_url, archive=req.image_archive)
        entrypoint, cmd = await asyncio.to_thread(self.runtime.image_command, image)
        cmd = list(req.command) if req.command else cmd
        if not entrypoint and not cmd:
            raise InstanceStartError(f"the image {image} has neither ENTRYPOINT nor CMD")
        egress = await self._egress() if req.network == "egress" else None
        env = self._env(req)
        env.update({"AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{RUNTIME_API_PORT}",
                    "AWS_LAMBDA_FUNCTION_NAME": req.function, "AWS_LAMBDA_FUNCTION_VERSION": str(req.version),
                    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(req.memory_mib),
                    "AWS_LAMBDA_FUNCTION_TIMEOUT": f"{req.timeout_s:g}"})
        if cmd:
            env.setdefault("_HANDLER", cmd[0])
        spec = ContainerSpec(instance_id=inst.instance_id, node_id=self.node_id, function=req.function,
                             version=req.version, image=image, code_dir=self.data_dir, shim_dir=SHIM_DIR,
                             memory_mib=req.memory_mib, cpu_millis=req.cpu_millis,
                             init_cpu_millis=INIT_CPU_MILLIS, concurrency=req.concurrency, env=env,
                             owner=req.owner, network=self.egress_network if egress else "", egress=egress,
                             package_type="image", command=(*entrypoint, *cmd), gate_binary=self.gate_binary)
        info = await asyncio.to_thread(self.runtime.run, spec)
        await self._open_services(inst, self.runtime.socket_path(info).parent)
        sock = await asyncio.to_thread(self.runtime.listen_inside, info, RUNTIME_API_PORT)
        inst.session = RuntimeApiSession(function=req.function, version=req.version,
                                         memory_mib=req.memory_mib, concurrency=req.concurrency)
        try:
            await inst.session.start(sock)
        except BaseException:
            sock.close()
            raise
        await asyncio.to_thread(self.runtime.open_gate, info)
        deadline = time.monotonic() + self.start_timeout_s
        while True:  # ready at its first /next; an init error is answered per call, as a zip's is
            try:
                await inst.session.wait_ready(0.1)
                break
            except RuntimeApiInitError:
                break
            except TimeoutError:
                pass
            state = await asyncio.to_thread(self.runtime.inspect, inst.instance_id)
            if state is None or not state.running:
                raise InstanceStartError(f"instance {inst.instance_id} exited during start (exit code "
                                         f"{state.exit_code if state else '?'}) without asking for an event")
            if time.monotonic() > deadline:
                raise InstanceStartError(f"instance {inst.instance_id} did not ask for an event within "
                                         f"{self.start_timeout_s:.0f}s")
        if req.cpu_millis < INIT_CPU_MILLIS:
            self._background(asyncio.to_thread(self.runtime.set_cpu, inst.instance_id, req.cpu_millis))

    async def _start_zip(self, inst: Instance, req: p.InstanceStart) -> None:
        """Python code run by the shim in a runtime image; ready once the shim's socket appears."""
        code = await self.ensure_code(req.code_digest, req.code_url)
        deps = await self.ensure_code(req.layer_digest, req.layer_url) if req.layer_digest else None
        image = await self.ensure_image(req.image, req.image_url) if req.image else self.image
        egress = await self._egress() if req.network == "egress" else None
        spec = ContainerSpec(instance_id=inst.instance_id, node_id=self.node_id, function=req.function,
                             version=req.version, image=image, code_dir=code,
                             shim_dir=SHIM_DIR, memory_mib=req.memory_mib,
                             cpu_millis=req.cpu_millis, init_cpu_millis=INIT_CPU_MILLIS,
                             concurrency=req.concurrency, env=self._env(req), owner=req.owner, deps_dir=deps,
                             network=self.egress_network if egress else "", egress=egress)
        info = await asyncio.to_thread(self.runtime.run, spec)
        inst.socket_path = self.runtime.socket_path(info)
        await self._open_services(inst, inst.socket_path.parent)
        await self._wait_socket(inst)
        if req.cpu_millis < INIT_CPU_MILLIS:
            self._background(asyncio.to_thread(self.runtime.set_cpu, inst.instance_id, req.cpu_millis))

    async def _wait_socket(self, inst: Instance) -> None:
        """Wait until the shim's socket exists (it is renamed into place once it accepts)."""
        deadline = time.monotonic() + self.start_timeout_s
        checks = 0
        while not inst.socket_path.exists():
            if time.monotonic() > deadline:
                raise InstanceStartError(f"instance {inst.instance_id} not ready after "
                                         f"{self.start_timeout_s:.0f}s")
            checks += 1
            if checks % 50 == 0:  # every ~100 ms make sure the container did not die on start
                info = await asyncio.to_thread(self.runtime.inspect, inst.instance_id)
                if info is None or not info.running:
                    raise InstanceStartError(f"instance {inst.instance_id} exited during start "
                                             f"(exit code {info.exit_code if info else '?'})")
            await asyncio.sleep(0.002)

    async def stop(self, instance_id: str) -> None:
        """Stop and remove an instance; unknown is success."""
        inst = self.instances.get(instance_id)
        if inst is not None:
            inst.state = InstanceState.STOPPING
        if inst is not None and inst.session is not None:
            await inst.session.close()
        await asyncio.to_thread(self.runtime.remove, instance_id)
        seq = 0
        if self.instances.pop(instance_id, None) is not None and inst is not None:
            seq = self._meter_instance(inst)
        if inst is not None and inst.shim is not None:
            inst.shim.close()
        if inst is not None:
            await self._close_services(inst)
        log.info("event=instance_stopped instance=%s", instance_id)
        # Answered once a control plane stored the instance's record (or after a short wait): a
        # node removed once its last instance stopped takes no unsent usage with it.
        await self.meter.wait_stored(seq, USAGE_WAIT_S)

    def _meter_instance(self, inst: Instance) -> int:
        busy = inst.busy_ms + ((time.perf_counter() - inst.busy_since) * 1000 if inst.in_flight else 0.0)
        return self.meter.instance(instance_id=inst.instance_id, function=inst.function,
                                   version=inst.version, memory_mib=inst.memory_mib,
                                   started_at=inst.started_at, ended_at=time.time(), busy_ms=busy,
                                   init_ms=inst.start_ms)

    # -- invocation ------------------------------------------------------------------------
    async def invoke(self, instance_id: str, body: bytes, request_id: str,
                     timeout_ms: int, *, cold: bool = False) -> tuple[int, dict[str, str], bytes]:
        """Proxy one invocation to the instance's socket; failures become outcome headers. Every
        call an instance ran is metered (`cold`: the call waited for this instance to start)."""
        inst = self.instances.get(instance_id)
        if inst is None or inst.state is not InstanceState.READY or \
                (inst.shim is None and inst.session is None):
            headers, out = outcome_response_parts(p.INSTANCE_NOT_FOUND,
                                                  f"instance {instance_id} is not ready here", gone=True)
            return 200, headers, out
        started_at, t0 = time.time(), time.perf_counter()
        if inst.session is not None:
            status, headers, payload = await self._invoke_image(inst, inst.session, body, request_id,
                                                                timeout_ms)
        else:
            status, headers, payload = await self._invoke_zip(inst, body, request_id, timeout_ms)
        elapsed_us = int((time.perf_counter() - t0) * 1_000_000)
        ran_us = int(headers.get(p.DURATION_HEADER, "0") or 0)  # the handler's own time, if it said
        self.meter.invocation(request_id=request_id, function=inst.function, version=inst.version,
                              instance_id=inst.instance_id, memory_mib=inst.memory_mib,
                              started_at=started_at, duration_us=ran_us if 0 < ran_us <= elapsed_us
                              else elapsed_us, init_ms=inst.take_init_ms(cold),
                              outcome=headers.get(p.OUTCOME_HEADER, p.CRASHED))
        return status, headers, payload

    async def _invoke_zip(self, inst: Instance, body: bytes, request_id: str,
                          timeout_ms: int) -> tuple[int, dict[str, str], bytes]:
        instance_id = inst.instance_id
        assert inst.shim is not None
        inst.enter()
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                answer, payload = await inst.shim.invoke(body, request_id, timeout_ms)
            headers = {p.OUTCOME_HEADER: answer.get(p.OUTCOME_HEADER.lower(), p.CRASHED),
                       p.LOG_BYTES_HEADER: answer.get(p.LOG_BYTES_HEADER.lower(), "0"),
                       p.DURATION_HEADER: answer.get(p.DURATION_HEADER.lower(), "0"),
                       "Content-Type": "application/json"}
            return 200, headers, payload
        except ShimAnswerTooLarge as exc:  # not read: neither this agent nor the caller holds it
            headers, out = outcome_response_parts(p.RESPONSE_TOO_LARGE, f"the function's {exc}", gone=False)
            return 200, headers, out
        except TimeoutError:
            self._background(self.stop(instance_id))
            headers, out = outcome_response_parts(
                p.TIMEOUT, f"the function did not return within {timeout_ms / 1000:g}s; "
                "its container was stopped", gone=True)
            return 200, headers, out
        except ShimConnectionError:
            outcome, message = await self._diagnose(inst)
            self._background(self.stop(instance_id))
            headers, out = outcome_response_parts(outcome, message, gone=True)
            return 200, headers, out
        finally:
            inst.leave()

    async def _invoke_image(self, inst: Instance, session: RuntimeApiSession, body: bytes, request_id: str,
                            timeout_ms: int) -> tuple[int, dict[str, str], bytes]:
        """One event through an image's Runtime API; a process that dies meanwhile is seen by
        watching its container (the API itself cannot tell)."""
        inst.enter()
        start = time.perf_counter()
        call = asyncio.ensure_future(session.invoke(body, request_id, timeout_ms))
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                while not call.done():
                    await asyncio.wait({call}, timeout=0.25)
                    if call.done():
                        break
                    info = await asyncio.to_thread(self.runtime.inspect, inst.instance_id)
                    if info is None or not info.running:
                        session.fail(*await self._diagnose(inst))
                outcome, payload = await call
        except TimeoutError:
            call.cancel()
            self._background(self.stop(inst.instance_id))
            headers, out = outcome_response_parts(
                p.TIMEOUT, f"the function did not return within {timeout_ms / 1000:g}s; "
                "its container was stopped", gone=True)
            return 200, headers, out
        finally:
            inst.leave()
        gone = outcome in (p.CRASHED, p.OUT_OF_MEMORY)
        if gone:
            self._background(self.stop(inst.instance_id))
        headers = {p.OUTCOME_HEADER: outcome, p.LOG_BYTES_HEADER: "0",
                   p.DURATION_HEADER: str(int((time.perf_counter() - start) * 1_000_000)),
                   "Content-Type": "application/json"}
        if gone:
            headers[p.INSTANCE_GONE_HEADER] = "1"
        return 200, headers, payload

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _diagnose(self, inst: Instance) -> tuple[str, str]:
        """Why did the connection to an instance break? Waits briefly for the engine to know."""
        info = None
        for _ in range(50):
            info = await asyncio.to_thread(self.runtime.inspect, inst.instance_id)
            if info is None or not info.running:
                break
            await asyncio.sleep(0.02)
        if info is not None and info.oom_killed:
            return p.OUT_OF_MEMORY, (f"the function exceeded its memory limit of {inst.memory_mib} MiB "
                                     "and was killed")
        code = info.exit_code if info is not None else None
        return p.CRASHED, f"the function's process died (exit code {code})"


def is_static_executable(path: Path) -> bool:
    """Whether `path` is an ELF executable without an interpreter (so it runs in any image)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit ELF only
                return False
            order: Literal["little", "big"] = "little" if head[5] == 1 else "big"
            phoff = int.from_bytes(head[32:40], order)
            phentsize = int.from_bytes(head[54:56], order)
            phnum = int.from_bytes(head[56:58], order)
            fh.seek(phoff)
            table = fh.read(phentsize * phnum)
    except OSError:
        return False
    kinds = [int.from_bytes(table[i:i + 4], order) for i in range(0, len(table), phentsize)]
    return 3 not in kinds  # PT_INTERP: it needs a dynamic loader


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _extract(archive: Path, dest: Path) -> None:
    """Extract a code zip whose paths were checked by the control plane at deploy time, keeping
    executable bits (a dependency layer's programs), never set-id ones."""
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            target = (dest / member.filename).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise InstanceStartError(f"zip member escapes its folder: {member.filename}")
        zf.extractall(dest)
        for member in zf.infolist():
            if not member.is_dir() and (member.external_attr >> 16) & 0o111:
                (dest / member.filename).chmod(0o755)
    dest.chmod(0o755)
