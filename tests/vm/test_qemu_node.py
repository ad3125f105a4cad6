"""One real VM through `QemuProvider`: boot, SSH, the agent over the forwarded port, a function
container in the guest, idempotent create, and a terminate that leaves nothing behind.

Until a control plane takes part, the agent gets an explicit node id and token (through the
bootstrap's `extra_env`) instead of joining; its heartbeats fail and are only logged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from code_server import CodeServer
from helpers import free_port

from node_agent.image import default_cache_dir
from placement import Resources
from provisioners import ssh
from provisioners.base import NodeBootstrap, NodeType, ProviderNode
from provisioners.qemu import bootstrap as boot
from provisioners.qemu.image import VmImage
from provisioners.qemu.provider import QemuProvider
from provisioners.qemu.rootfs import GUEST_ADDRESS
from provisioners.qemu.software import GuestSoftware
from provisioners.qemu.vm import GuestForward, qemu_alive

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

TOKEN = "vm-test-node-secret"
NODE_TYPE = NodeType(name="small", capacity=Resources(1000, 512))
RUNNING_TIMEOUT_S = 420.0


def _bootstrap(request_id: str) -> NodeBootstrap:
    return NodeBootstrap(control_plane_url=f"http://127.0.0.1:{free_port()}", join_token="unused",
                         extra_env={"CUMULUS_AGENT_NODE_ID": "vm-node-1", "CUMULUS_AGENT_TOKEN": TOKEN})


# The test's code server, as the guests see it at a virtual address of QEMU's network.
FORWARDED = ("10.0.2.100", 8000)


@pytest.fixture(scope="module")
def provider(vm_image: VmImage, software: GuestSoftware, code_server: CodeServer,
             tmp_path_factory: pytest.TempPathFactory) -> QemuProvider:
    return QemuProvider("vm-tests", _bootstrap, root=tmp_path_factory.mktemp("qemu-nodes"), software=software,
                        cache_dir=default_cache_dir(),
                        guest_forwards=[GuestForward(*FORWARDED, host_port=code_server.port)])


@pytest.fixture(scope="module")
def node(provider: QemuProvider) -> Iterator[ProviderNode]:
    t0 = time.monotonic()
    created = provider.create(NODE_TYPE, 1, request_id="req-vm-1")
    call_s = time.monotonic() - t0
    assert [n.state for n in created] == ["pending"]
    [running] = provider.wait_running([created[0].id], timeout_s=RUNNING_TIMEOUT_S)
    print(f"\nqemu node timings: create_call_s={call_s:.2f} {json.dumps(running.extra['timings'])}")
    yield running
    provider.terminate([running.id], request_id="req-vm-1-cleanup")


def test_agent_answers_healthz_through_the_forwarded_port(node: ProviderNode) -> None:
    resp = requests.get(f"{node.extra['agent_url']}/healthz", timeout=10)
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "node_id": "vm-node-1"}
    assert node.extra["agent_url"].startswith("http://127.0.0.1:")


def test_ssh_into_the_guest_with_the_pinned_host_key(node: ProviderNode, vm_image: VmImage) -> None:
    settings = boot.ssh_settings(vm_image, Path(node.extra["dir"]) / "known_hosts", ready_timeout_s=30)
    client = ssh.connect("127.0.0.1", settings, port=int(node.extra["ssh_port"]))
    try:
        out = ssh.run(client, "docker image ls --format '{{.Repository}}:{{.Tag}}'; "
                      "systemctl is-active cumulus-agent", timeout_s=120)
    finally:
        client.close()
    assert out.exit_status == 0, out.output
    assert vm_image.runtime_image in out.output.split()
    assert out.output.split()[-1] == "active"


HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def _start_hello(node: ProviderNode, code_server: CodeServer, instance_id: str) -> requests.Response:
    start = {"function": "hello", "version": 1, "handler": "main.handler", "code_digest": code_server.digest,
             "code_url": code_server.guest_url, "memory_mib": 128, "cpu_millis": 500, "timeout_s": 30}
    return requests.put(f"{node.extra['agent_url']}/v1/instances/{instance_id}", json=start, headers=HEADERS,
                        timeout=240)


def test_a_function_container_runs_in_the_guest(node: ProviderNode, code_server: CodeServer) -> None:
    url = node.extra["agent_url"]
    headers = HEADERS
    resp = _start_hello(node, code_server, "vm-i1")
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "ready"
    out = requests.post(f"{url}/v1/instances/vm-i1/invoke", data=json.dumps({"name": "qemu"}),
                        headers=headers, timeout=60)
    assert out.status_code == 200, out.text
    assert out.headers["X-Cumulus-Outcome"] == "ok"
    assert out.json() == {"message": "Hello, qemu!", "function": "hello"}
    assert requests.delete(f"{url}/v1/instances/vm-i1", headers=headers, timeout=120).status_code == 204


def _guest(node: ProviderNode, vm_image: VmImage, command: str) -> str:
    """What a shell command prints in the guest (for a failure's message)."""
    settings = boot.ssh_settings(vm_image, Path(node.extra["dir"]) / "known_hosts", ready_timeout_s=30)
    client = ssh.connect("127.0.0.1", settings, port=int(node.extra["ssh_port"]))
    try:
        return ssh.run(client, command, timeout_s=120).output
    finally:
        client.close()


def test_a_function_with_egress_reaches_out_through_the_guest_but_not_the_guest(
        node: ProviderNode, code_server: CodeServer, vm_image: VmImage) -> None:
    """Egress in a VM: out through the guest's Docker NAT and QEMU's network to the test's own code
    server (at a virtual address QEMU forwards to it); the host's loopback as the guest sees it
    (10.0.2.2, where the control plane is) and the guest's own address (its agent) are refused by
    the rules in the container's namespace."""
    url = node.extra["agent_url"]
    start = {"function": "netprobe", "version": 1, "handler": "main.handler",
             "code_digest": code_server.probe_digest,
             "code_url": code_server.url_of(code_server.probe_digest),
             "memory_mib": 128, "cpu_millis": 500, "timeout_s": 60, "network": "egress"}
    resp = requests.put(f"{url}/v1/instances/vm-net1", json=start, headers=HEADERS, timeout=240)
    assert resp.status_code == 200, resp.text
    agent_port = _bootstrap("any").agent_port  # where the agent listens in the guest
    targets = [list(FORWARDED), ["10.0.2.2", code_server.port], [GUEST_ADDRESS, agent_port]]
    out = requests.post(f"{url}/v1/instances/vm-net1/invoke", data=json.dumps({"targets": targets}),
                        headers=HEADERS, timeout=120)
    assert out.status_code == 200 and out.headers["X-Cumulus-Outcome"] == "ok", out.text
    seen = out.json()
    assert any(dest == "00000000" for _, dest in seen["routes"])  # a default route: egress
    assert seen["10.0.2.100:8000"] == "connected", (seen, _guest(node, vm_image,
        "cat /etc/docker/daemon.json; iptables -t nat -S; iptables -S FORWARD; ip route"))
    assert seen[f"10.0.2.2:{code_server.port}"].startswith("OSError"), seen  # a control plane's address
    assert seen[f"{GUEST_ADDRESS}:{agent_port}"].startswith("OSError"), seen
    assert requests.delete(f"{url}/v1/instances/vm-net1", headers=HEADERS, timeout=120).status_code == 204


def test_a_sigkilled_agent_is_restarted_by_systemd_and_adopts_its_instance(
        node: ProviderNode, vm_image: VmImage, code_server: CodeServer) -> None:
    url = node.extra["agent_url"]
    headers = HEADERS
    resp = _start_hello(node, code_server, "vm-i2")
    assert resp.status_code == 200, resp.text
    settings = boot.ssh_settings(vm_image, Path(node.extra["dir"]) / "known_hosts", ready_timeout_s=30)
    client = ssh.connect("127.0.0.1", settings, port=int(node.extra["ssh_port"]))
    try:
        main_pid = "systemctl show -p MainPID --value cumulus-agent"
        before = ssh.run(client, main_pid, timeout_s=60).output.strip()
        killed = ssh.run(client, "systemctl kill -s SIGKILL cumulus-agent", timeout_s=60)
        assert killed.exit_status == 0, killed.output
        deadline = time.monotonic() + 180
        after = before
        while time.monotonic() < deadline and after in (before, "0", ""):
            time.sleep(1)
            after = ssh.run(client, main_pid, timeout_s=60).output.strip()
    finally:
        client.close()
    assert after not in (before, "0", ""), "systemd did not restart the agent"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            listed = requests.get(f"{url}/v1/instances", headers=headers, timeout=10)
            if listed.status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(1)
    assert [i["instance_id"] for i in listed.json()] == ["vm-i2"]  # adopted from its labels
    out = requests.post(f"{url}/v1/instances/vm-i2/invoke", data=json.dumps({"name": "again"}),
                        headers=headers, timeout=60)
    assert out.status_code == 200 and out.json()["message"] == "Hello, again!", out.text
    assert requests.delete(f"{url}/v1/instances/vm-i2", headers=headers, timeout=120).status_code == 204


def test_create_again_with_the_same_request_id_boots_nothing(provider: QemuProvider,
                                                              node: ProviderNode) -> None:
    again = provider.create(NODE_TYPE, 1, request_id="req-vm-1")
    assert [n.id for n in again] == [node.id]
    assert [n.id for n in provider.list_instances()] == [node.id]


def test_terminate_stops_qemu_and_removes_the_overlay(provider: QemuProvider, node: ProviderNode) -> None:
    folder = Path(node.extra["dir"])
    overlay = folder / "disk.qcow2"
    assert qemu_alive(int(node.extra["pid"]), overlay)
    provider.terminate([node.id], request_id="req-vm-1-terminate")
    assert not qemu_alive(int(node.extra["pid"]), overlay)
    assert not folder.exists()
    assert provider.list_instances() == []
    provider.terminate([node.id, "qemu-never-was"], request_id="req-vm-1-again")
