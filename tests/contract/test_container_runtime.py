"""The `ContainerRuntime` contract, run against Docker (real engine) and the fake."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_runtime import FakeRuntime
from helpers import DOCKER_HOST

from node_agent.agent import SHIM_DIR
from node_agent.egress import EgressPolicy
from node_agent.image import DEFAULT_RECIPE
from node_agent.runtime import (
    LABEL_FUNCTION,
    LABEL_NODE,
    ContainerRuntime,
    ContainerRuntimeError,
    ContainerSpec,
    DockerRuntime,
)
from node_agent.shim import cumulus_wire as wire
from node_agent.shim_client import ShimClient


@pytest.fixture(params=["docker", "fake"])
def runtime(request: pytest.FixtureRequest) -> Iterator[ContainerRuntime]:
    if request.param == "docker":
        request.getfixturevalue("docker_engine")
        rt: ContainerRuntime = DockerRuntime(DOCKER_HOST)
    else:
        rt = FakeRuntime()
    made: list[str] = []
    request.node.made = made
    yield rt
    for instance_id in made:
        rt.remove(instance_id)


def _spec(tmp_path: Path, node: str, made: list[str]) -> ContainerSpec:
    code_dir = tmp_path / f"code-{uuid.uuid4().hex[:6]}"
    code_dir.mkdir()
    (code_dir / "main.py").write_text("def handler(e, c):\n    return 1\n")
    instance_id = f"ct-{uuid.uuid4().hex[:10]}"
    made.append(instance_id)
    return ContainerSpec(instance_id=instance_id, node_id=node, function="ctfn", version=3,
                         image=DEFAULT_RECIPE.tag, code_dir=code_dir, shim_dir=SHIM_DIR, memory_mib=64,
                         cpu_millis=250)


def test_run_is_idempotent_and_labels_tell_what_runs(runtime: ContainerRuntime, tmp_path: Path,
                                                       request: pytest.FixtureRequest) -> None:
    spec = _spec(tmp_path, "node-a", request.node.made)
    first = runtime.run(spec)
    second = runtime.run(spec)
    assert first.instance_id == second.instance_id == spec.instance_id
    found = runtime.list({LABEL_NODE: "node-a", LABEL_FUNCTION: "ctfn"})
    assert [c.instance_id for c in found] == [spec.instance_id]
    info = runtime.inspect(spec.instance_id)
    assert info is not None and info.function == "ctfn" and info.version == 3
    assert runtime.list({LABEL_NODE: "node-elsewhere"}) == []


def test_remove_is_idempotent_and_missing_is_success(runtime: ContainerRuntime, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    spec = _spec(tmp_path, "node-b", request.node.made)
    runtime.run(spec)
    runtime.remove(spec.instance_id)
    runtime.remove(spec.instance_id)
    runtime.remove("never-existed")
    assert runtime.inspect(spec.instance_id) is None
    assert runtime.list({LABEL_NODE: "node-b"}) == []


def test_memory_usage_and_cpu_update(runtime: ContainerRuntime, tmp_path: Path,
                                     request: pytest.FixtureRequest) -> None:
    spec = _spec(tmp_path, "node-c", request.node.made)
    runtime.run(spec)
    runtime.set_cpu(spec.instance_id, 500)
    runtime.set_cpu("never-existed", 500)
    deadline = time.monotonic() + 10
    usage = runtime.memory_usage(spec.instance_id)
    while not usage and time.monotonic() < deadline:
        time.sleep(0.2)
        usage = runtime.memory_usage(spec.instance_id)
    assert usage is not None and usage > 0
    assert runtime.memory_usage("never-existed") is None


async def _call(sock: Path) -> tuple[dict[str, str], bytes]:
    client = ShimClient(str(sock))
    try:
        return await client.invoke(b"{}", "req", 5000)
    finally:
        client.close()


def test_docker_containers_are_locked_down(tmp_path: Path, request: pytest.FixtureRequest,
                                           docker_engine: None) -> None:
    rt = DockerRuntime(DOCKER_HOST)
    made: list[str] = []
    spec = _spec(tmp_path, "node-d", made)
    try:
        rt.run(spec)
        attrs = rt.client.api.inspect_container(spec.name)
        host = attrs["HostConfig"]
        assert host["ReadonlyRootfs"] and host["NetworkMode"] == "none"
        assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
        assert host["Memory"] == 64 * 2**20 and host["MemorySwap"] == 64 * 2**20
        assert host["PidsLimit"] == 256 and host["Init"] is True  # a reaper as pid 1
        assert set(host["Tmpfs"]) == {"/tmp", "/run/fn"} and "size=64k" in host["Tmpfs"]["/run/fn"]
        assert attrs["Config"]["User"] == "65534:65534"
        mounts = {m["Destination"]: m["RW"] for m in attrs["Mounts"]}
        assert mounts == {"/var/task": False, "/opt/cumulus": False}  # nothing of the host is writable
        info = rt.inspect(spec.instance_id)
        assert info is not None and info.pid > 0
        sock = rt.socket_path(info)
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        headers, body = asyncio.run(_call(sock))
        assert headers["x-cumulus-outcome"] == "ok" and body == b"1"
    finally:
        for instance_id in made:
            rt.remove(instance_id)


def test_an_egress_container_runs_only_once_its_rules_are_in(tmp_path: Path, docker_engine: None) -> None:
    rt = DockerRuntime(DOCKER_HOST)
    network = f"cumulus-ct-{uuid.uuid4().hex[:6]}"
    rt.prepare_network(network)
    rt.prepare_network(network)  # idempotent
    made: list[str] = []
    policy = EgressPolicy(deny=("169.254.0.0/16", "10.99.0.0/16"), deny_tcp_ports=(8081,))
    spec = dataclasses.replace(_spec(tmp_path, "node-e", made), network=network, egress=policy)
    try:
        info = rt.run(spec)
        attrs = rt.client.api.inspect_container(spec.name)
        assert attrs["HostConfig"]["NetworkMode"] == rt.client.networks.get(network).id  # joined by id
        assert attrs["Config"]["Env"].count(f"CUMULUS_GATE={wire.SOCKET_DIR}/{wire.GATE_NAME}") == 1
        rules = subprocess.run(["nsenter", f"--net=/proc/{info.pid}/ns/net", "iptables", "-S",
                                "CUMULUS-EGRESS"], capture_output=True, text=True, check=True).stdout
        assert "-d 10.99.0.0/16 -j REJECT" in rules and "--dport 8081 -j REJECT" in rules
        gate = Path(f"/proc/{info.pid}/root{wire.SOCKET_DIR}/{wire.GATE_NAME}")
        assert gate.exists()  # written after the rules: the shim went on
        deadline = time.monotonic() + 30
        while not rt.socket_path(info).exists():
            assert time.monotonic() < deadline, "the shim never listened"
            time.sleep(0.02)
        net = rt.client.networks.get(network)
        assert net.attrs["Options"].get("com.docker.network.bridge.enable_icc") == "false"
    finally:
        for instance_id in made:
            rt.remove(instance_id)
        rt.client.networks.get(network).remove()


def test_an_image_process_is_held_until_the_gate_and_serves_on_its_own_loopback(
        tmp_path: Path, docker_engine: None) -> None:
    rt = DockerRuntime(DOCKER_HOST)
    assert rt.has_image(DEFAULT_RECIPE.tag) and not rt.has_image("cumulus-ct/none:0")
    entrypoint, cmd = rt.image_command(DEFAULT_RECIPE.tag)
    assert (entrypoint, cmd) == ([], [])  # an imported rootfs says nothing of what to run
    made: list[str] = []
    serve = ("import socket; c = socket.create_connection(('127.0.0.1', 9001)); c.sendall(b'hi'); "
             "print(c.recv(10))")
    spec = dataclasses.replace(_spec(tmp_path, "node-i", made), package_type="image",
                               command=("python3", "-c", serve), gate_binary=Path("/bin/busybox"))
    try:
        info = rt.run(spec)
        sock = rt.listen_inside(info, 9001)
        time.sleep(0.5)
        held = rt.inspect(spec.instance_id)
        assert held is not None and held.running
        with pytest.raises(BlockingIOError):  # held by the gate: it has not even connected
            sock.accept()
        sock.setblocking(True)
        sock.settimeout(30)
        rt.open_gate(info)
        conn, _ = sock.accept()  # its own loopback, in its own namespace
        assert conn.recv(10) == b"hi"
        conn.sendall(b"there")
        conn.close()
        sock.close()
        assert rt.client.api.wait(spec.name, timeout=30)["StatusCode"] == 0
        assert b"there" in rt.client.api.logs(spec.name)
    finally:
        for instance_id in made:
            rt.remove(instance_id)


def test_the_shim_runs_no_code_before_its_gate(tmp_path: Path, docker_engine: None) -> None:
    """A networked instance's shim waits for the gate file (written once the rules are in): here it
    is set to wait with no network at all, and its socket appears only once the gate is written."""
    rt = DockerRuntime(DOCKER_HOST)
    made: list[str] = []
    base = _spec(tmp_path, "node-g", made)
    spec = dataclasses.replace(base, env={"CUMULUS_GATE": f"{wire.SOCKET_DIR}/{wire.GATE_NAME}"})
    try:
        info = rt.run(spec)
        time.sleep(1.0)
        assert not rt.socket_path(info).exists()  # the handler is not even imported yet
        rt.open_gate(info)
        deadline = time.monotonic() + 30
        while not rt.socket_path(info).exists():
            assert time.monotonic() < deadline, "the shim never went on"
            time.sleep(0.02)
    finally:
        for instance_id in made:
            rt.remove(instance_id)


def test_egress_networks_made_at_once_end_as_one(tmp_path: Path, docker_engine: None) -> None:
    """The engine's duplicate check is best effort: agents (or one agent's starts) making the
    network at once can leave several of one name, which the engine then refuses as ambiguous.
    Every runtime settles on the oldest, joins it by id, and removes the unused others."""
    rt, other = DockerRuntime(DOCKER_HOST), DockerRuntime(DOCKER_HOST)
    network = f"cumulus-ct-{uuid.uuid4().hex[:6]}"
    labels = {"io.cumulus.role": "egress"}
    made_nets = [rt.client.networks.create(network, driver="bridge", labels=labels) for _ in range(3)]
    made: list[str] = []
    try:
        assert len(rt.client.networks.list(names=[network])) == 3
        oldest = sorted(made_nets, key=lambda n: (n.attrs["Created"], n.id))[0]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda r: r.prepare_network(network), [rt, other, rt, other]))
        left = [n for n in rt.client.networks.list(names=[network]) if n.name == network]
        assert [n.id for n in left] == [oldest.id]
        spec = dataclasses.replace(_spec(tmp_path, "node-d", made), network=network,
                                   egress=EgressPolicy(deny=("169.254.0.0/16",)))
        rt.run(spec)
        assert rt.client.api.inspect_container(spec.name)["HostConfig"]["NetworkMode"] == left[0].id
    finally:
        for instance_id in made:
            rt.remove(instance_id)
        for n in rt.client.networks.list(names=[network]):
            if n.name == network:
                n.remove()


def test_a_policy_that_cannot_be_applied_leaves_no_container(tmp_path: Path, docker_engine: None) -> None:
    rt = DockerRuntime(DOCKER_HOST)
    network = f"cumulus-ct-{uuid.uuid4().hex[:6]}"
    subnets = rt.prepare_network(network)
    assert subnets  # a network the node made: its subnets go into every policy
    made: list[str] = []
    bad = EgressPolicy(deny=("not-a-network",))
    spec = dataclasses.replace(_spec(tmp_path, "node-p", made), network=network, egress=bad)
    try:
        with pytest.raises(ContainerRuntimeError, match="network"):
            rt.run(spec)
        assert rt.inspect(spec.instance_id) is None
    finally:
        for instance_id in made:
            rt.remove(instance_id)
        rt.client.networks.get(network).remove()
