"""An in-memory `ContainerRuntime` for unit tests of logic around the seam."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path

from node_agent.runtime import ContainerInfo, ContainerSpec


class FakeRuntime:
    """Remembers containers; records calls."""

    def __init__(self) -> None:
        self.containers: dict[str, ContainerInfo] = {}
        self.run_calls: list[str] = []
        self.cpu: dict[str, int] = {}
        self.images: set[str] = set()
        self.networks: set[str] = set()

    def run(self, spec: ContainerSpec) -> ContainerInfo:
        self.run_calls.append(spec.instance_id)
        if spec.instance_id not in self.containers:
            self.containers[spec.instance_id] = ContainerInfo(spec.instance_id, spec.function, spec.version,
                                                              True, False, None, spec.labels())
        return self.containers[spec.instance_id]

    def socket_path(self, info: ContainerInfo) -> Path:
        return Path("/nonexistent") / f"{info.instance_id}.sock"  # no shim runs in a fake

    def inspect(self, instance_id: str) -> ContainerInfo | None:
        return self.containers.get(instance_id)

    def remove(self, instance_id: str) -> None:
        self.containers.pop(instance_id, None)

    def list(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        return [c for c in self.containers.values() if all(c.labels.get(k) == v for k, v in labels.items())]

    def memory_usage(self, instance_id: str) -> int | None:
        return 1 << 20 if instance_id in self.containers else None

    def set_cpu(self, instance_id: str, cpu_millis: int) -> None:
        if instance_id in self.containers:
            self.cpu[instance_id] = cpu_millis

    def has_image(self, reference: str) -> bool:
        return reference in self.images

    def import_image(self, archive: Path, reference: str, *, rootfs: bool) -> None:
        self.images.add(reference)

    def prepare_network(self, name: str) -> tuple[str, ...]:
        self.networks.add(name)
        return ()

    def image_command(self, reference: str) -> tuple[list[str], list[str]]:
        return ["/bootstrap"], ["main.handler"]

    def listen_inside(self, info: ContainerInfo, port: int) -> socket.socket:
        raise NotImplementedError("no container network in a fake")

    def open_gate(self, info: ContainerInfo) -> None:
        pass
