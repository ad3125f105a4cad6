"""The fleet loop on the aws provider (boto3) and the libcloud provider (libcloud's EC2 driver), both
against a moto server: a call with no node provisions an EC2 instance with the right tags and
cloud-init user data; a "VM" (a node agent process started
here from the config that user data would write) joins with its join token; the call is answered;
when load stops the node is drained and the instance terminated."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, RunningPlatform, free_port, start_platform, wait_for
from moto_proxy import NamespaceProxy

pytestmark = [pytest.mark.aws, pytest.mark.docker]

ECHO = {"main.py": "def handler(event, context):\n    return {'echo': event}\n"}


def _instances(ec2: Any, states: tuple[str, ...] = ("pending", "running")) -> list[dict[str, Any]]:
    out = ec2.describe_instances(Filters=[{"Name": "tag:cumulus:cluster", "Values": ["awsfleet"]},
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
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(30)
        plat.stop()
        proxy.close()
