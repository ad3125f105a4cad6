"""A function's network, through the real parts, on a network this test makes.

The test makes its own Docker network and runs on it an S3 emulator (moto, from this venv, in a
container of the runtime image) and a second server that the node is told to deny; the node agent
puts functions with egress on that network. Every connection a function tries goes to one of
those containers, by name: never to the host's address on the bridge, nor to a metadata address.
What must stay unreachable there (the metadata range, the node's own addresses, the agent port) is
read from the container's own packet filter rules, and the agent-port rule is also tried against a
listener the test runs in its own container on that port.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import RunningPlatform, containers_of, docker_client, start_platform, wait_for

from node_agent.egress import host_addresses
from node_agent.image import DEFAULT_RECIPE

pytestmark = [pytest.mark.docker, pytest.mark.packages, pytest.mark.timeout(900)]

SITE_PACKAGES = Path(next(p for p in sys.path if p.endswith("site-packages")))

PROBE = '''
import json, socket, urllib.request

def _try(host, port):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((host, port))
        return "connected"
    except OSError as exc:
        return type(exc).__name__
    finally:
        s.close()

def handler(event, context):
    if event["what"] == "s3":
        import boto3
        s3 = boto3.client("s3", endpoint_url=event["endpoint"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket="reports")
        s3.put_object(Bucket="reports", Key="today.txt", Body=b"all good")
        body = s3.get_object(Bucket="reports", Key="today.txt")["Body"].read().decode()
        return {"body": body, "keys": [o["Key"] for o in s3.list_objects_v2(Bucket="reports")["Contents"]]}
    if event["what"] == "connect":
        return {f"{h}:{p}": _try(h, p) for h, p in event["targets"]}
    routes = open("/proc/net/route").read().splitlines()[1:]
    return {"routes": [r.split()[:3] for r in routes], "resolv": open("/etc/resolv.conf").read()}
'''


@dataclass
class Net:
    """The test's own network and its servers."""

    name: str
    s3: str  # the moto container's name (its S3 endpoint is http://<s3>:5000)
    denied: str  # the container the node is told to deny
    denied_ip: str


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    client = docker_client()
    tag = secrets.token_hex(4)
    network = client.networks.create(f"cumulus-test-net-{tag}", driver="bridge",
                                     labels={"io.cumulus.test": "egress"})
    made: list[Any] = []
    try:
        serve = ("import sys; sys.path.insert(0, '/opt/site'); from moto.server import main; "
                 "main(['-H', '0.0.0.0', '-p', '5000'])")
        s3 = client.containers.run(DEFAULT_RECIPE.tag, ["python3", "-c", serve], name=f"s3-{tag}",
                                   detach=True, network=network.name, user="65534:65534",
                                   environment={"HOME": "/tmp"},
                                   volumes={str(SITE_PACKAGES): {"bind": "/opt/site", "mode": "ro"}},
                                   labels={"io.cumulus.test": "egress"})
        made.append(s3)
        listen = ("import socket, time; s = socket.socket(); s.bind(('0.0.0.0', 7000)); s.listen(); "
                  "time.sleep(3600)")
        denied = client.containers.run(DEFAULT_RECIPE.tag, ["python3", "-c", listen], name=f"denied-{tag}",
                                       detach=True, network=network.name, user="65534:65534",
                                       labels={"io.cumulus.test": "egress"})
        made.append(denied)
        denied.reload()
        ip = denied.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]

        def s3_up() -> bool:
            probe = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/', timeout=2)"
            return s3.exec_run(["python3", "-c", probe]).exit_code == 0

        wait_for(s3_up, 60, what="the S3 emulator in its container")
        yield Net(network.name, s3.name, denied.name, ip)
    finally:
        for container in made:
            container.remove(force=True)
        network.remove()


@pytest.fixture(scope="module")
def platform(docker_engine: None, net: Net,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    plat = start_platform(tmp_path_factory.mktemp("egress"), extra_env={
        "PIP_NO_INDEX": "0", "CUMULUS_QUEUE_TIMEOUT_S": "120",
        "CUMULUS_AGENT_EGRESS_NETWORK": net.name,
        "CUMULUS_AGENT_EGRESS_DENY": json.dumps([f"{net.denied_ip}/32"])})
    try:
        plat.deploy_ok("netprobe", {"main.py": PROBE, "requirements.txt": "boto3\n"}, timeout_s=60,
                       memory_mb=256)
        plat.deploy_ok("offline", {"main.py": PROBE}, network="none")
        yield plat
    finally:
        plat.stop()


def _agent_port(platform: RunningPlatform) -> int:
    [node] = [json.loads(p.read_text()) for p in (platform.data_dir / "nodes").glob("*/node.json")]
    return int(node["port"])


def _rules(function: str) -> list[str]:
    [summary] = [c for c in containers_of(function) if c["State"] == "running"]
    pid = docker_client().api.inspect_container(summary["Id"])["State"]["Pid"]
    out = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "iptables", "-S", "CUMULUS-EGRESS"],
                         capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.splitlines()


def test_egress_is_the_default_and_reaches_s3_by_name(platform: RunningPlatform, net: Net) -> None:
    assert platform.get("/v1/functions/netprobe")["config"]["network"] == "egress"
    resp = platform.invoke("netprobe", {"what": "s3", "endpoint": f"http://{net.s3}:5000"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"body": "all good", "keys": ["today.txt"]}


def test_the_node_denies_metadata_itself_and_agent_ports_in_the_containers_own_rules(
        platform: RunningPlatform, net: Net) -> None:
    seen = platform.invoke("netprobe", {"what": "look"})
    assert seen.status_code == 200, seen.text
    assert any(route[1] == "00000000" for route in seen.json()["routes"])  # a default route: egress
    rules = _rules("netprobe")
    reject = [r for r in rules if "-j REJECT" in r]
    assert rules[1] == "-A CUMULUS-EGRESS -o lo -j RETURN"  # loopback (Docker's DNS) first
    assert "-A CUMULUS-EGRESS -d 169.254.0.0/16 -j REJECT --reject-with icmp-net-prohibited" in reject
    for addr in host_addresses():  # every address of the node: its agent, a control plane here
        if not addr.startswith("127."):
            assert f"-A CUMULUS-EGRESS -d {addr}/32 -j REJECT --reject-with icmp-net-prohibited" in reject
    port = _agent_port(platform)
    assert f"-A CUMULUS-EGRESS -p tcp -m tcp --dport {port} -j REJECT --reject-with tcp-reset" in reject
    assert f"-A CUMULUS-EGRESS -d {net.denied_ip}/32 -j REJECT --reject-with icmp-net-prohibited" in reject


def test_connections_the_rules_refuse_fail_and_others_succeed(platform: RunningPlatform, net: Net) -> None:
    port = _agent_port(platform)
    client = docker_client()
    s3 = client.containers.get(net.s3)
    listen = (f"import socket, time; s = socket.socket(); s.bind(('0.0.0.0', {port})); s.listen(); "
              "time.sleep(600)")
    s3.exec_run(["python3", "-c", listen], detach=True, user="65534:65534")
    check = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    wait_for(lambda: s3.exec_run(["python3", "-c", check]).exit_code == 0, 30,
             what="a listener on the agent's port in the test's own container")
    targets = [[net.s3, 5000], [net.s3, port], [net.denied, 7000]]
    resp = platform.invoke("netprobe", {"what": "connect", "targets": targets})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {f"{net.s3}:5000": "connected",  # the same server, another port
                           f"{net.s3}:{port}": "ConnectionRefusedError",  # the agent's port: reset
                           f"{net.denied}:7000": "OSError"}  # a denied address: net prohibited


def test_a_function_without_network_has_no_route_and_reaches_nothing(platform: RunningPlatform,
                                                                      net: Net) -> None:
    seen = platform.invoke("offline", {"what": "look"})
    assert seen.status_code == 200, seen.text
    assert seen.json()["routes"] == []
    tried = platform.invoke("offline", {"what": "connect", "targets": [[net.s3, 5000]]})
    assert tried.status_code == 200, tried.text
    assert tried.json() == {f"{net.s3}:5000": "gaierror"}  # not even a name server to ask
