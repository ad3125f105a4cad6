"""The `ContainerRuntime` seam and its Docker implementation.

Containers are named and labelled after the instance they run, so the node's truth lives in Docker:
an agent that restarts lists containers by label and knows again what runs where (as faasd does).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from node_agent import egress as eg
from node_agent import netns
from node_agent.egress import EgressPolicy
from node_agent.image import ImageBuildError, import_rootfs
from node_agent.shim import cumulus_wire as wire

DEPS_MOUNT = "/opt/cumulus-deps"
GATE_MOUNT = "/opt/cumulus-gate/busybox"
# An image's process waits (bounded) until the node is ready for it: its Runtime API listening in the
# container's namespace, its egress rules in. Busybox's own shell, so the image needs no shell.
GATE_SCRIPT = (f'i=0; while [ ! -e {wire.SOCKET_DIR}/{wire.GATE_NAME} ]; do i=$((i+1)); '
               f'if [ $i -gt {int(wire.GATE_WAIT_S * 1000)} ]; then echo "cumulus: the node did not '
               'start this instance" >&2; exit 3; fi; usleep 1000; done; exec "$@"')

LABEL_PREFIX = "io.cumulus."
LABEL_NODE = LABEL_PREFIX + "node"
LABEL_FUNCTION = LABEL_PREFIX + "function"
LABEL_VERSION = LABEL_PREFIX + "version"
LABEL_INSTANCE = LABEL_PREFIX + "instance"
LABEL_OWNER = LABEL_PREFIX + "owner"
LABEL_PACKAGE = LABEL_PREFIX + "package"


class ContainerRuntimeError(Exception):
    """The container runtime failed (engine unreachable, bad image, refused options)."""


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """Everything needed to run one function instance as a container."""

    instance_id: str
    node_id: str
    function: str
    version: int
    image: str
    code_dir: Path
    shim_dir: Path
    memory_mib: int
    cpu_millis: int
    init_cpu_millis: int = 0  # a higher quota while the instance starts (0: none)
    concurrency: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    pids_limit: int = 256
    tmp_mib: int = 64
    socket_kib: int = 64  # the socket folder's own tmpfs: the socket, and nothing else of size
    owner: str = ""  # the control plane that asked for it
    deps_dir: Path | None = None  # the dependency layer, mounted read-only at DEPS_MOUNT
    network: str = ""  # the egress network to join ("": no network at all)
    egress: EgressPolicy | None = None  # with a network: what the container may not reach
    package_type: str = "zip"  # "image": the image's own process runs (code_dir, shim_dir unused)
    command: tuple[str, ...] = ()  # an image function's command (its entrypoint and arguments)
    gate_binary: Path | None = None  # a static busybox that holds an image's process until the gate

    @property
    def name(self) -> str:
        """The container's name: unique per instance, so `run` can be idempotent."""
        return container_name(self.instance_id)

    def labels(self) -> dict[str, str]:
        """Labels that let an agent rebuild its state from the engine alone."""
        return {LABEL_NODE: self.node_id, LABEL_FUNCTION: self.function,
                LABEL_VERSION: str(self.version), LABEL_INSTANCE: self.instance_id,
                LABEL_PREFIX + "memory": str(self.memory_mib), LABEL_PREFIX + "cpu": str(self.cpu_millis),
                LABEL_PREFIX + "concurrency": str(self.concurrency), LABEL_OWNER: self.owner,
                LABEL_PACKAGE: self.package_type}


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """What the runtime knows of a container."""

    instance_id: str
    function: str
    version: int
    running: bool
    oom_killed: bool
    exit_code: int | None
    labels: Mapping[str, str]
    pid: int = 0  # the container's main process on the host (0 when it does not run)


CPU_PERIOD_US = 100_000


def _quota(cpu_millis: int) -> int:
    return max(1000, cpu_millis * CPU_PERIOD_US // 1000)


def container_name(instance_id: str) -> str:
    """Container name for an instance id."""
    return f"cumulus-{instance_id}"


class ContainerRuntime(Protocol):
    """Runs function instances as isolated containers.

    Guarantees:
    - `run` is idempotent by `spec.instance_id`: a second call returns the existing container.
    - `remove` of a missing container is success.
    - `list` returns every container carrying all the given labels, running or exited; it is the
      node's source of truth after a restart.
    - Every method raises `ContainerRuntimeError` (never an SDK exception) when the engine fails.
    """

    def run(self, spec: ContainerSpec) -> ContainerInfo:
        """Create and start the container for `spec` (or return the one already there); the info
        of a running container has its `pid`."""
        ...

    def socket_path(self, info: ContainerInfo) -> Path:
        """Where this host reaches the runtime shim's socket of a running container."""
        ...

    def image_command(self, reference: str) -> tuple[list[str], list[str]]:
        """What an image runs by default: its ENTRYPOINT and its CMD."""
        ...

    def listen_inside(self, info: ContainerInfo, port: int) -> socket.socket:
        """A socket listening on 127.0.0.1:`port` in the running container's network namespace."""
        ...

    def open_gate(self, info: ContainerInfo) -> None:
        """Let the held process of a container started with a gate (an image function) run."""
        ...

    def inspect(self, instance_id: str) -> ContainerInfo | None:
        """The container of `instance_id`, or None if it does not exist."""
        ...

    def remove(self, instance_id: str) -> None:
        """Kill and remove the container of `instance_id`; missing is success."""
        ...

    def list(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """Containers carrying all of `labels`."""
        ...

    def memory_usage(self, instance_id: str) -> int | None:
        """Resident memory of the container in bytes, or None if it is gone."""
        ...

    def set_cpu(self, instance_id: str, cpu_millis: int) -> None:
        """Change the CPU quota of a running container; missing is success."""
        ...

    def has_image(self, reference: str) -> bool:
        """Whether the engine holds the image `reference`."""
        ...

    def import_image(self, archive: Path, reference: str, *, rootfs: bool) -> None:
        """Load an image: a rootfs tarball imported as `reference` (`rootfs`), or a `docker save`
        archive that must hold `reference`."""
        ...

    def prepare_network(self, name: str) -> tuple[str, ...]:
        """Make sure the egress network `name` exists (see `node_agent.egress`); the subnets of it
        that functions may not reach (those of a network the node made itself)."""
        ...


def _info(attrs: Mapping[str, Any]) -> ContainerInfo:
    labels = attrs.get("Config", {}).get("Labels") or {}
    state = attrs.get("State", {})
    running = bool(state.get("Running"))
    return ContainerInfo(
        instance_id=labels.get(LABEL_INSTANCE, ""),
        function=labels.get(LABEL_FUNCTION, ""),
        version=int(labels.get(LABEL_VERSION, "0") or 0),
        running=running,
        oom_killed=bool(state.get("OOMKilled")),
        exit_code=None if running else state.get("ExitCode"),
        labels=labels,
        pid=int(state.get("Pid") or 0),
    )


class DockerRuntime:
    """`ContainerRuntime` on a Docker engine through the Docker SDK."""

    def __init__(self, base_url: str | None = None) -> None:
        import docker

        try:
            self.client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
            self.client.ping()
        except Exception as exc:
            where = base_url or "DOCKER_HOST"
            raise ContainerRuntimeError(f"no Docker engine answers at {where}: {exc}") from exc
        self._network_ids: dict[str, str] = {}  # egress network name -> the id containers join

    def run(self, spec: ContainerSpec) -> ContainerInfo:
        """Create and start a locked-down container; idempotent by instance id."""
        import docker.errors
        from docker.types import LogConfig

        existing = self.inspect(spec.instance_id)
        if existing is not None:
            return existing
        env = dict(spec.env)
        image_fn = spec.package_type == "image"
        binds: dict[str, dict[str, str]] = {}
        if image_fn:  # the image's own process, held by the gate until the node is ready for it
            if spec.gate_binary is None or not spec.command:
                raise ContainerRuntimeError(f"{spec.name}: an image function needs a command and a gate")
            binds[str(spec.gate_binary)] = {"bind": GATE_MOUNT, "mode": "ro"}
            entrypoint: list[str] | None = [GATE_MOUNT, "sh", "-c", GATE_SCRIPT, "cumulus-gate"]
            command, workdir = list(spec.command), None
        else:
            env.update({"CUMULUS_SOCKET": f"{wire.SOCKET_DIR}/{wire.SOCKET_NAME}", "HOME": "/tmp",
                        "PYTHONDONTWRITEBYTECODE": "1"})
            binds[str(spec.code_dir)] = {"bind": "/var/task", "mode": "ro"}
            binds[str(spec.shim_dir)] = {"bind": "/opt/cumulus", "mode": "ro"}
            if spec.deps_dir is not None:
                binds[str(spec.deps_dir)] = {"bind": DEPS_MOUNT, "mode": "ro"}
            if spec.network:  # its code waits until the node's rules are in its network namespace
                env["CUMULUS_GATE"] = f"{wire.SOCKET_DIR}/{wire.GATE_NAME}"
            entrypoint, command = None, ["python3", "-I", "-S", "/opt/cumulus/cumulus_runtime.py"]
            workdir = "/var/task"
        # Nothing of the host is writable: the socket lives in a tmpfs of its own (the host reaches
        # it through /proc/<pid>/root), /tmp in another; both are bounded.
        tmpfs = {"/tmp": f"rw,nosuid,nodev,size={spec.tmp_mib}m,mode=1777",
                 wire.SOCKET_DIR: f"rw,nosuid,nodev,noexec,size={spec.socket_kib}k,mode=0700,"
                                  "uid=65534,gid=65534"}
        api = self.client.api
        try:
            # The low-level API: create + start, two engine calls (containers.run adds an inspect).
            host_config = api.create_host_config(
                binds=binds,
                network_mode=self._network_ids.get(spec.network, spec.network) or "none",
                read_only=True,
                tmpfs=tmpfs,
                init=True,  # a reaper as pid 1: zombies never eat the pids limit
                mem_limit=f"{spec.memory_mib}m",
                memswap_limit=f"{spec.memory_mib}m",
                cpu_period=CPU_PERIOD_US,
                cpu_quota=_quota(max(spec.cpu_millis, spec.init_cpu_millis)),
                pids_limit=spec.pids_limit,
                security_opt=["no-new-privileges"],
                cap_drop=["ALL"],
                log_config=LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
            )
            created = api.create_container(
                spec.image, command=command, entrypoint=entrypoint,
                name=spec.name, labels=spec.labels(), environment=env, user="65534:65534",
                working_dir=workdir, volumes=[b["bind"] for b in binds.values()],
                host_config=host_config)
            api.start(created["Id"])
            started = self.inspect(spec.instance_id)  # its pid: how the host reaches its socket
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # a concurrent run of the same instance won the name
                found = self.inspect(spec.instance_id)
                if found is not None:
                    return found
            raise ContainerRuntimeError(f"could not start {spec.name}: {exc}") from exc
        except docker.errors.DockerException as exc:
            raise ContainerRuntimeError(f"could not start {spec.name}: {exc}") from exc
        if started is None:
            raise ContainerRuntimeError(f"{spec.name} vanished as it started")
        if spec.network:
            self._egress(spec, started)
        if spec.network and not image_fn:  # an image's gate opens once its Runtime API listens
            self.open_gate(started)
        return started

    def _egress(self, spec: ContainerSpec, info: ContainerInfo) -> None:
        """Write the egress rules into the container's network namespace (before its code runs)."""
        try:
            if not info.pid:
                raise eg.EgressError("the container is not running")
            eg.apply(info.pid, spec.egress or EgressPolicy())
        except eg.EgressError as exc:
            self.remove(spec.instance_id)
            raise ContainerRuntimeError(f"could not set up the network of {spec.name}: {exc}") from exc

    def open_gate(self, info: ContainerInfo) -> None:
        """Write the gate file into the container's socket folder: its held process goes on."""
        try:
            Path(f"/proc/{info.pid}/root{wire.SOCKET_DIR}/{wire.GATE_NAME}").write_text("ready\n")
        except OSError as exc:
            raise ContainerRuntimeError(f"could not open the gate of {container_name(info.instance_id)}: "
                                        f"{exc}") from exc

    def listen_inside(self, info: ContainerInfo, port: int) -> socket.socket:
        """A listening socket on the container's own loopback (see `node_agent.netns`)."""
        try:
            return netns.listen_in(info.pid, "127.0.0.1", port)
        except OSError as exc:
            raise ContainerRuntimeError(f"{container_name(info.instance_id)}: {exc}") from exc

    def image_command(self, reference: str) -> tuple[list[str], list[str]]:
        """ENTRYPOINT and CMD of an image in this engine."""
        import docker.errors

        try:
            config = self.client.api.inspect_image(reference).get("Config") or {}
        except docker.errors.DockerException as exc:
            raise ContainerRuntimeError(f"inspect image {reference}: {exc}") from exc
        return list(config.get("Entrypoint") or []), list(config.get("Cmd") or [])

    def socket_path(self, info: ContainerInfo) -> Path:
        """The shim's socket inside the container's own tmpfs, through its root as the host sees it."""
        return Path(f"/proc/{info.pid}/root{wire.SOCKET_DIR}/{wire.SOCKET_NAME}")

    def inspect(self, instance_id: str) -> ContainerInfo | None:
        """Inspect by instance id; None when missing."""
        import docker.errors

        try:
            attrs = self.client.api.inspect_container(container_name(instance_id))
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as exc:
            raise ContainerRuntimeError(f"inspect {instance_id}: {exc}") from exc
        return _info(attrs)

    def remove(self, instance_id: str) -> None:
        """Force-remove (kills first); NotFound is success."""
        import docker.errors

        try:
            self.client.api.remove_container(container_name(instance_id), force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "in progress" in str(exc):
                return  # another caller is already removing it
            raise ContainerRuntimeError(f"remove {instance_id}: {exc}") from exc
        except docker.errors.DockerException as exc:
            raise ContainerRuntimeError(f"remove {instance_id}: {exc}") from exc

    def list(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """List containers (running or not) carrying all of `labels`."""
        import docker.errors

        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        try:
            summaries = self.client.api.containers(all=True, filters=filters)
            out = []
            for summary in summaries:
                try:
                    out.append(_info(self.client.api.inspect_container(summary["Id"])))
                except docker.errors.NotFound:
                    continue
            return out
        except docker.errors.DockerException as exc:
            raise ContainerRuntimeError(f"list containers: {exc}") from exc

    def set_cpu(self, instance_id: str, cpu_millis: int) -> None:
        """Update the CFS quota in place (used to end the start-up CPU boost)."""
        import docker.errors

        try:
            self.client.api.update_container(container_name(instance_id), cpu_quota=_quota(cpu_millis),
                                             cpu_period=CPU_PERIOD_US)
        except docker.errors.NotFound:
            return
        except docker.errors.DockerException as exc:
            raise ContainerRuntimeError(f"update {instance_id}: {exc}") from exc

    def has_image(self, reference: str) -> bool:
        """Whether the engine holds `reference`."""
        import docker.errors

        try:
            self.client.images.get(reference)
            return True
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.DockerException as exc:
            raise ContainerRuntimeError(f"inspect image {reference}: {exc}") from exc

    def import_image(self, archive: Path, reference: str, *, rootfs: bool) -> None:
        """`docker import` a rootfs, or `docker load` a saved image that must hold `reference`."""
        import docker.errors

        try:
            if rootfs:
                import_rootfs(self.client, archive, reference)
            else:
                with archive.open("rb") as fh:
                    self.client.images.load(fh)
        except (docker.errors.DockerException, ImageBuildError) as exc:
            raise ContainerRuntimeError(f"loading the image {reference}: {exc}") from exc
        if not self.has_image(reference):
            raise ContainerRuntimeError(f"the image archive does not hold {reference}")

    def prepare_network(self, name: str) -> tuple[str, ...]:
        """The node's egress bridge, made on first use."""
        try:
            network_id, subnets = eg.ensure_network(self.client, name)
        except eg.EgressError as exc:
            raise ContainerRuntimeError(str(exc)) from exc
        self._network_ids[name] = network_id  # by id: the engine may hold several of that name
        return tuple(subnets)

    def memory_usage(self, instance_id: str) -> int | None:
        """Memory usage from the engine's one-shot stats (cache excluded)."""
        import docker.errors

        try:
            stats = self.client.api.stats(container_name(instance_id), stream=False, one_shot=True)
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as exc:
            raise ContainerRuntimeError(f"stats {instance_id}: {exc}") from exc
        mem = stats.get("memory_stats") or {}
        usage = int(mem.get("usage") or 0)
        cache = int((mem.get("stats") or {}).get("total_inactive_file") or 0)
        return max(0, usage - cache)
