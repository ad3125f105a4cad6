"""Choosing and building the fleet's provider, and the node types it offers.

Providers are found by name in `provisioners.registry` (imported lazily: choosing `local` never
imports boto3). What the qemu provider needs from the node agent's room (the runtime image, the
agent package) is handed in here, so `provisioners` never imports `node_agent`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

from control_plane.core import FileConfig, Settings
from control_plane.fleet.agent_package import AgentPackage
from node_agent.image import DEFAULT_RECIPE, ImageBuildError, debian_mirror, default_cache_dir, runtime_rootfs
from node_agent.settings import default_memory_mib
from placement import NodeType, Resources
from provisioners.base import BootstrapFor, NodeProvider, ProviderError
from provisioners.local import AgentBootstrap, LocalProvider
from provisioners.qemu.software import GuestSoftware
from provisioners.registry import PROVIDERS, provider_class

# A small VM: room for a few instances; the VM gets this plus the guest's own overhead.
QEMU_NODE_TYPE = NodeType(name="vm", capacity=Resources(1000, 768), hourly_cost=0.0, boot_s=90.0)


def node_types(settings: Settings, file: FileConfig) -> dict[str, NodeType]:
    """The node types of the config file, else the provider's default (local: this machine, its
    cores offered `cpu_overcommit` times; qemu: a small VM)."""
    if settings.provider not in PROVIDERS:
        raise ProviderError(f"unknown provider {settings.provider!r}; choose one of "
                            f"{', '.join(sorted(PROVIDERS))}")
    if file.node_types:
        return {t.name: t for t in file.node_types}
    if settings.provider == "local":
        cpu = settings.node_cpu_millis or int((os.cpu_count() or 1) * 1000 * settings.cpu_overcommit)
        memory = settings.node_memory_mib or default_memory_mib()
        return {"local": NodeType(name="local", capacity=Resources(cpu, memory), boot_s=0.0)}
    if settings.provider == "qemu":
        return {QEMU_NODE_TYPE.name: QEMU_NODE_TYPE}
    raise ProviderError(f"the {settings.provider} provider needs [[node_types]] in a config file")


def qemu_software(agent_package: AgentPackage, cache_dir: Path) -> GuestSoftware:
    """What every qemu node runs: the function runtime image of `node_agent.image` and this
    control plane's agent package with the agent's pinned dependencies."""

    def mirror() -> str:
        try:
            return debian_mirror()
        except ImageBuildError as exc:
            raise ProviderError(str(exc)) from exc

    return GuestSoftware(runtime_image=DEFAULT_RECIPE.tag, runtime_recipe=DEFAULT_RECIPE.digest(),
                         runtime_rootfs=lambda: runtime_rootfs(DEFAULT_RECIPE, cache_dir),
                         agent_wheel=agent_package.wheel,
                         agent_requirements=agent_package.requirements("agent"), debian_mirror=mirror)


def build_provider(settings: Settings, file: FileConfig, *, bootstrap_for: BootstrapFor,
                   agent_package: AgentPackage) -> NodeProvider:
    """The provider `settings.provider`, configured from the `[provider.NAME]` section of `file`."""
    if settings.provider == "local":
        return LocalProvider(settings.node_root, settings.cluster, bootstrap_for, AgentBootstrap(
            docker_host=settings.docker_host, image=settings.image,
            heartbeat_interval_s=settings.heartbeat_interval_s))
    cls = provider_class(settings.provider)
    kwargs = dict(file.providers.get(settings.provider, {}))
    if settings.provider == "qemu":  # VMs live in node folders, like local agents
        kwargs["root"] = Path(kwargs.get("root", settings.node_root))
        cache = Path(kwargs.pop("cache_dir", default_cache_dir()))
        kwargs.update(cache_dir=cache, software=qemu_software(agent_package, cache))
    try:
        return cast(NodeProvider, cls(settings.cluster, bootstrap_for, **kwargs))
    except TypeError as exc:
        raise ProviderError(f"[provider.{settings.provider}] in the config does not fit: {exc}") from exc
