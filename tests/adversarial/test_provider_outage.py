"""A provider that is down, on the aws (boto3) and libcloud (its EC2 driver) providers, each pointed at
a loopback port where nothing listens: `cumulus up` with `min_nodes = 1` starts anyway and says
what is wrong; a call that needs a node gets 503 `NoCapacity` naming the provider's error within
two back-offs, not a 429 after ten minutes; the fleet loop keeps trying in the background."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import free_port, start_platform, wait_for

pytestmark = [pytest.mark.adversarial, pytest.mark.docker]

ECHO = {"main.py": "def handler(event, context):\n    return event\n"}


def _provider(kind: str, port: int) -> str:
    if kind == "aws":
        return f"""
[provider.aws]
region = "us-east-1"
endpoint_url = "http://127.0.0.1:{port}"
image_id = "ami-12c6146b"
instance_types = {{ small = "t3.small" }}
"""
    return f"""
[provider.libcloud]
driver = "ec2"
driver_args = ["testing", "testing"]
sizes = {{ small = "t3.small" }}
image = "ami-12c6146b"

[provider.libcloud.driver_kwargs]
host = "127.0.0.1"
port = {port}
secure = false
region = "us-east-1"
signature_version = "4"
"""


@pytest.mark.parametrize("kind", ["aws", "libcloud"])
def test_a_provider_that_is_down_fails_calls_fast_and_clearly(kind: str, tmp_path: Path,
                                                              docker_engine: None) -> None:
    config = tmp_path / "cumulus.toml"
    config.write_text(f"""
[cumulus]
provider = "{kind}"
cluster = "down-{kind}"
min_nodes = 1
max_nodes = 2
failure_backoff_s = 1

[[node_types]]
name = "small"
cpu_millis = 2000
memory_mib = 2048
""" + _provider(kind, free_port()))
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_EC2_METADATA_DISABLED": "true"}
    t0 = time.monotonic()
    plat = start_platform(tmp_path / "cp", args=("--config", str(config)), wait_for_node=False,
                          extra_env=env)

    def serving() -> str:
        text = (plat.data_dir / "up.out").read_text()
        return text if "Press Ctrl-C" in text else ""

    try:
        out = wait_for(serving, 60, what="cumulus up to be serving")
        assert "no node is ready yet" in out and "failed" in out, out
        assert time.monotonic() - t0 < 60  # not the 90 s wait for a node that cannot come
        plat.deploy_ok("stranded", ECHO)
        started = time.monotonic()
        resp = plat.invoke("stranded", {"x": 1}, timeout=120)
        waited = time.monotonic() - started
        assert resp.status_code == 503, resp.text
        err = resp.json()["error"]
        assert err["type"] == "NoCapacity" and "cannot grow" in err["message"] and "failed" in err["message"]
        assert waited < 30, waited
        # It keeps trying: more provider errors are recorded as time goes on.
        def errors() -> int:
            return sum(e["kind"] == "provider_error" for e in plat.get("/v1/events?limit=1000"))

        seen = errors()
        wait_for(lambda: errors() > seen, 60, what="the fleet loop to try the provider again")
    finally:
        plat.stop()
