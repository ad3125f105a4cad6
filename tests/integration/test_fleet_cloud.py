"""The fleet loop on the aws provider (boto3) and the libcloud provider (libcloud's EC2 driver), both
against a moto server: a call with no node provisions an EC2 instance with the right tags and
cloud-init user data; a "VM" (a node agent process started
here from the config that user data would write) joins with its join token; the call is answered;
when load stops the node is drained and the instance terminated. And a control plane SIGKILLed with a
node joined and an instance warm comes back keeping both: no node is terminated as an orphan, the
warm instance is adopted, and a call made as soon as it answers is served, not refused."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, RunningPlatform, containers_of, free_port, start_platform, wait_for
from moto_proxy import NamespaceProxy

from control_plane.store import Store

pytestmark = [pytest.mark.aws, pytest.mark.docker]

ECHO = {"main.py": "def handler(event, context):\n    return {'echo': event}\n"}


def _instances(ec2: Any, states: tuple[str, ...] = ("pending", "running"),
               cluster: str = "awsfleet") -> list[dict[str, Any]]:
    out = ec2.describe_instances(Filters=[{"Name": "tag:cumulus:cluster", "Values": [cluster]},
                                          {"Name": "instance-state-name", "Values": list(states)}])
    return [i for r in out["Reservations"] for i in r["Instances"]]


def _agent_config_from_user_data(ec2: Any, instance_id: str) -> dict[str, Any]:
    attr = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    script = base64.b64decode(attr["UserData"]["Value"]).decode()
    assert script.startswith("#!/bin/bash") and "/v1/agent/package/cumulus-" in script
    body = script.split("<<'CUMULUS_AGENT_JSON'\n", 1)[1].split("\nCUMULUS_AGENT_JSON\n", 1)[0]
    return json.loads(body)  # type: ignore[no-any-return]


def _provider_section(kind: str, moto_server: Any, ami: str, proxy_port: int) -> str:
    if kind == "aws":
        return f"""
[provider.aws]
region = "{moto_server.region}"
endpoint_url = "{moto_server.endpoint_url}"
image_id = "{ami}"
instance_types = {{ small = "t3.small" }}
"""
    kwargs = (f'host = "127.0.0.1", port = {proxy_port}, secure = false, region = "{moto_server.region}", '
              'signature_version = "4"')
    return f"""
[provider.libcloud]
driver = "ec2"
driver_args = ["testing", "testing"]
driver_kwargs = {{ {kwargs} }}
sizes = {{ small = "t3.small" }}
image = "{ami}"
"""


@pytest.mark.parametrize("kind", ["aws", "libcloud"])
def test_fleet_provisions_joins_and_terminates(kind: str, docker_engine: None, moto_server: Any,
                                               moto_ami: str, moto_ec2: Any, tmp_path: Path) -> None:
    proxy = NamespaceProxy(moto_server.host, moto_server.port)
    config = tmp_path / "cumulus.toml"
    config.write_text(f"""
[cumulus]
provider = "{kind}"
cluster = "awsfleet"
min_nodes = 0
max_nodes = 1
watermark_window_s = 2
scale_down_cooldown_s = 2

[[node_types]]
name = "small"
cpu_millis = 2000
memory_mib = 2048
hourly_cost = 0.0208
boot_s = 60
""" + _provider_section(kind, moto_server, moto_ami, proxy.port))
    plat: RunningPlatform = start_platform(tmp_path / "cp", args=("--config", str(config)),
                                           wait_for_node=False)
    agent: subprocess.Popen[bytes] | None = None
    try:
        plat.deploy_ok("awsecho", ECHO, keep_alive_s=1)
        answer: dict[str, Any] = {}
        call = threading.Thread(
            target=lambda: answer.update(resp=plat.invoke("awsecho", {"x": 1}, timeout=300)))
        call.start()

        (inst,) = wait_for(lambda: _instances(moto_ec2), 120, interval=0.5, what="an EC2 instance")
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags["cumulus:cluster"] == "awsfleet" and tags["cumulus:node-type"] == "small"
        assert tags["cumulus:request-id"] and inst["InstanceType"] == "t3.small"

        # The "VM": run the agent with the config its user data writes, on this machine.
        cfg = _agent_config_from_user_data(moto_ec2, inst["InstanceId"])
        port = free_port()
        cfg.update(listen_host="127.0.0.1", listen_port=port, advertise_url=f"http://127.0.0.1:{port}",
                   data_dir=str(tmp_path / "vm"), heartbeat_interval_s=0.5)
        (tmp_path / "agent.json").write_text(json.dumps(cfg))
        agent = subprocess.Popen([sys.executable, "-m", "node_agent", "--config",
                                  str(tmp_path / "agent.json")], cwd=REPO, env=plat.env,
                                 stdout=(tmp_path / "agent.log").open("wb"), stderr=subprocess.STDOUT)

        call.join(300)
        resp = answer["resp"]
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"echo": {"x": 1}} and resp.headers["X-Cumulus-Cold-Start"] == "true"

        # Load stops: the instance idles out, the node is removed, the EC2 instance terminated.
        wait_for(lambda: not _instances(moto_ec2), 90, interval=0.5, what="the instance to be terminated")
        assert _instances(moto_ec2, ("shutting-down", "terminated"))
        kinds = [e["kind"] for e in plat.get("/v1/events?limit=1000")]
        assert kinds.count("node_add") == 1 and "node_ready" in kinds and "node_remove" in kinds

        # The cloud node metered the call and its instance, and the control plane took its records
        # (sent with the credential its join gave it).
        store = Store(f"sqlite:///{plat.data_dir / 'cumulus.db'}")
        wait_for(lambda: store.instance_rows(), 30, interval=0.5, what="the instance's usage record")
        (usage,) = store.usage_rows()
        assert usage.request_id == resp.headers["X-Request-Id"] and usage.init_ms > 0
        assert usage.node_id and usage.node_id == store.instance_rows()[0].node_id
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(30)
        plat.stop()
        proxy.close()


def _one_node_config(config: Path, kind: str, cluster: str, moto_server: Any, ami: str,
                     proxy_port: int) -> tuple[str, ...]:
    """A fleet of exactly one "small" node on `kind`; the `cumulus up` arguments that read it."""
    config.write_text(f"""
[cumulus]
provider = "{kind}"
cluster = "{cluster}"
min_nodes = 1
max_nodes = 1

[[node_types]]
name = "small"
cpu_millis = 2000
memory_mib = 2048
boot_s = 60
""" + _provider_section(kind, moto_server, ami, proxy_port))
    return ("--config", str(config))


def _start_agent(ec2: Any, instance_id: str, plat: RunningPlatform,
                 tmp_path: Path) -> subprocess.Popen[bytes]:
    """The "VM" of an EC2 instance: its agent, run here with the config its user data writes."""
    cfg = _agent_config_from_user_data(ec2, instance_id)
    port = free_port()
    cfg.update(listen_host="127.0.0.1", listen_port=port, advertise_url=f"http://127.0.0.1:{port}",
               data_dir=str(tmp_path / "vm"), heartbeat_interval_s=0.5)
    (tmp_path / "agent.json").write_text(json.dumps(cfg))
    return subprocess.Popen([sys.executable, "-m", "node_agent", "--config", str(tmp_path / "agent.json")],
                            cwd=REPO, env=plat.env, stdout=(tmp_path / "agent.log").open("wb"),
                            stderr=subprocess.STDOUT)


@pytest.mark.parametrize("kind", ["aws", "libcloud"])
def test_restart_keeps_cloud_nodes_and_warm_instances(kind: str, docker_engine: None, moto_server: Any,
                                                      moto_ami: str, moto_ec2: Any, tmp_path: Path) -> None:
    # A cloud node's id is not its provider's id: after a restart the node is found again by the
    # provision request it joined under, which the store keeps.
    cluster, fn = f"restart-{kind}", f"warm{kind}"
    proxy = NamespaceProxy(moto_server.host, moto_server.port)
    config = tmp_path / "cumulus.toml"
    args = _one_node_config(config, kind, cluster, moto_server, moto_ami, proxy.port)
    env = {"CUMULUS_ORPHAN_GRACE_S": "2"}  # an unknown machine would be terminated at once
    plat = start_platform(tmp_path / "cp", args=args, extra_env=env, wait_for_node=False)
    agent: subprocess.Popen[bytes] | None = None
    try:
        (inst,) = wait_for(lambda: _instances(moto_ec2, cluster=cluster), 120, interval=0.5,
                           what="an EC2 instance")
        agent = _start_agent(moto_ec2, inst["InstanceId"], plat, tmp_path)
        wait_for(lambda: [n["state"] for n in plat.get("/v1/nodes")] == ["ready"], 120, interval=0.5,
                 what="the node to join")
        (node,) = plat.get("/v1/nodes")
        assert node["id"] != inst["InstanceId"]
        plat.deploy_ok(fn, ECHO, keep_alive_s=600)
        first = plat.invoke(fn, {"n": 0}, timeout=120)
        assert first.status_code == 200 and first.headers["X-Cumulus-Cold-Start"] == "true", first.text
        containers = {c["Id"] for c in containers_of(fn) if c["State"] == "running"}
        assert len(containers) == 1

        kills = 0
        for n in (1, 2):
            port = int(plat.url.rsplit(":", 1)[1])
            plat.proc.send_signal(signal.SIGKILL)
            plat.proc.wait(30)
            kills += 1
            plat = start_platform(tmp_path / "cp", args=args, extra_env=env, wait_for_node=False, port=port)
            # As soon as it answers: the known node has not reported yet, the call waits for it.
            resp = plat.invoke(fn, {"n": n}, timeout=120)
            assert resp.status_code == 200 and resp.json() == {"echo": {"n": n}}, resp.text

        # Past the orphan grace, several listings later: the node, its machine and its instance
        # are all still there.
        wait_for(lambda: plat.get(f"/v1/functions/{fn}")["instances"] == 1, 30, interval=0.5,
                 what="the warm instance adopted")
        time.sleep(6)
        assert [i["InstanceId"] for i in _instances(moto_ec2, cluster=cluster)] == [inst["InstanceId"]]
        assert [(n["id"], n["state"]) for n in plat.get("/v1/nodes")] == [(node["id"], "ready")]
        kinds = [e["kind"] for e in plat.get("/v1/events?limit=1000")]
        assert not {"orphan_terminated", "node_gone", "node_remove", "node_lost"} & set(kinds), kinds
        assert kinds.count("node_add") == 1, kinds
        assert {c["Id"] for c in containers_of(fn) if c["State"] == "running"} == containers
        last = plat.invoke(fn, {"n": 3})
        assert last.status_code == 200 and last.headers["X-Cumulus-Cold-Start"] == "false", last.text
        print(f"restart on {kind}: kills={kills} nodes_terminated=0 instances_lost=0 calls_failed=0")
    finally:
        plat.stop()
        if agent is not None:
            agent.terminate()
            agent.wait(30)
        proxy.close()


@pytest.mark.pg
@pytest.mark.parametrize("kind", ["aws", "libcloud"])
def test_leader_failover_keeps_cloud_nodes(kind: str, docker_engine: None, moto_server: Any, moto_ami: str,
                                           moto_ec2: Any, postgres_db: str, tmp_path: Path) -> None:
    # HA on PostgreSQL: the follower heard the node's heartbeats but not its join; as the new
    # leader it must still find the node's machine (by its provision request, from the store).
    from cryptography.fernet import Fernet

    cluster, fn = f"ha-{kind}", f"ha{kind}"
    proxy = NamespaceProxy(moto_server.host, moto_server.port)
    config = tmp_path / "cumulus.toml"
    args = _one_node_config(config, kind, cluster, moto_server, moto_ami, proxy.port)
    env = {"CUMULUS_DB": postgres_db, "CUMULUS_LEASE_TTL_S": "3", "CUMULUS_ORPHAN_GRACE_S": "2",
           "CUMULUS_SECRET_KEY": Fernet.generate_key().decode()}
    a = start_platform(tmp_path / "a", args=args, extra_env=env, wait_for_node=False)
    plats = [a]
    agent: subprocess.Popen[bytes] | None = None
    try:
        (inst,) = wait_for(lambda: _instances(moto_ec2, cluster=cluster), 120, interval=0.5,
                           what="an EC2 instance")
        # B starts first: it learns the node from its heartbeats, after the join it did not serve.
        b = start_platform(tmp_path / "b", args=args, extra_env=env, wait_for_node=False, token=a.token)
        plats.append(b)
        agent = _start_agent(moto_ec2, inst["InstanceId"], a, tmp_path)
        for plat in plats:
            wait_for(lambda p=plat: [n["state"] for n in p.get("/v1/nodes")] == ["ready"], 120,  # type: ignore[misc]
                     interval=0.5, what=f"the node ready on {plat.url}")
        (node,) = b.get("/v1/nodes")
        a.deploy_ok(fn, ECHO, keep_alive_s=600)
        for plat in plats:
            resp = plat.invoke(fn, {"via": plat.url}, timeout=120)
            assert resp.status_code == 200, resp.text
        b_id = next(m["id"] for m in b.get("/v1/control-planes") if m["self"])

        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(30)
        wait_for(lambda: [m["id"] for m in b.get("/v1/control-planes") if m["leader"]] == [b_id], 15,
                 interval=0.2, what="the follower to take over")
        time.sleep(6)  # past the orphan grace, listing after listing, as the leader
        assert [i["InstanceId"] for i in _instances(moto_ec2, cluster=cluster)] == [inst["InstanceId"]]
        assert [(n["id"], n["state"]) for n in b.get("/v1/nodes")] == [(node["id"], "ready")]
        kinds = [e["kind"] for e in b.get("/v1/events?limit=1000")]
        assert not {"orphan_terminated", "node_gone", "node_remove", "node_lost"} & set(kinds), kinds
        resp = b.invoke(fn, {"after": "failover"})
        assert resp.status_code == 200 and resp.headers["X-Cumulus-Cold-Start"] == "false", resp.text
        print(f"failover on {kind}: nodes_terminated=0 calls_failed=0")
    finally:
        for plat in plats:
            if plat.proc.poll() is None:
                plat.stop()
        if agent is not None:
            agent.terminate()
            agent.wait(30)
        proxy.close()
