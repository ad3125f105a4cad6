"""The shared `NodeProvider` contract, run against `QemuProvider` with real VMs.

The contract only needs nodes to be listed and terminated; they start booting for real (QEMU
processes), and every one is stopped at teardown. One node per create keeps the 2-core CI machine
from booting more than a couple of VMs at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from contract.node_provider_contract import NodeProviderContract

from node_agent.image import default_cache_dir
from provisioners.base import NodeBootstrap, NodeProvider
from provisioners.qemu.image import VmImage
from provisioners.qemu.provider import QemuProvider
from provisioners.qemu.software import GuestSoftware

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]


def _bootstrap(request_id: str) -> NodeBootstrap:
    return NodeBootstrap(control_plane_url="http://127.0.0.1:9", join_token=f"join-{request_id}")


class TestQemuProvider(NodeProviderContract):
    """`QemuProvider` keeps the promises of every provider."""

    count = 1
    missing_node_id = "qemu-0000000000"

    @pytest.fixture
    def root(self, vm_image: VmImage, tmp_path: Path) -> Path:
        return tmp_path / "nodes"

    @pytest.fixture
    def provider(self, root: Path, software: GuestSoftware) -> Iterator[NodeProvider]:
        prov = QemuProvider("cluster-a", _bootstrap, root=root, software=software,
                            cache_dir=default_cache_dir())
        yield prov
        prov.terminate([n.id for n in prov.list_instances()], request_id="contract-cleanup")

    @pytest.fixture
    def other_provider(self, root: Path, software: GuestSoftware) -> Iterator[NodeProvider]:
        prov = QemuProvider("cluster-b", _bootstrap, root=root, software=software,
                            cache_dir=default_cache_dir())
        yield prov
        prov.terminate([n.id for n in prov.list_instances()], request_id="contract-cleanup")
