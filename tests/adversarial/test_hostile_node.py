"""A node acting as an attacker would, through `cumulus up` and its real local node: with the
credentials it holds (taken from its own data directory) it cannot report for another node, register
one that never joined, move itself to another URL, claim an absurd capacity, or join again with a
join token; and what the control plane keeps at rest holds no secret in plain text."""

from __future__ import annotations

import json
import sqlite3
import uuid
from typing import Any

import pytest
import requests
from helpers import RunningPlatform

pytestmark = [pytest.mark.adversarial, pytest.mark.docker]

ECHO = {"main.py": "import os\n\ndef handler(event, context):\n    return os.environ.get('TOKEN', '')\n"}


def _a_node(platform: RunningPlatform) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the identity one of the platform's nodes saved, the control plane's view of that node)."""
    saved = sorted((platform.data_dir / "nodes").glob("*/data/identity.json"))
    assert saved, "no local node joined"
    identity = json.loads(saved[0].read_text())
    [node] = [n for n in platform.get("/v1/nodes") if n["id"] == identity["node_id"]]
    return identity, node


def _beat(platform: RunningPlatform, identity: dict[str, Any], **body: Any) -> requests.Response:
    beat = {"node_id": identity["node_id"], "url": "http://127.0.0.1:1", "provider": "local",
            "node_type": "local", "cpu_millis": 2000, "memory_mib": 4096, **body}
    return requests.post(f"{platform.url}/v1/internal/heartbeat", json=beat, timeout=30,
                         headers={"Authorization": f"Bearer {identity['node_id']}:{identity['node_secret']}"})


def _error(resp: requests.Response, status: int, kind: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["type"] == kind, resp.text


def test_a_nodes_credential_acts_for_that_node_from_its_url_only(platform: RunningPlatform) -> None:
    identity, before = _a_node(platform)
    nodes_before = {n["id"] for n in platform.get("/v1/nodes")}
    platform.deploy_ok("nodeprobe", ECHO)
    assert platform.invoke("nodeprobe", {}).status_code == 200

    forged = f"n-forged-{uuid.uuid4().hex[:6]}"
    _error(_beat(platform, identity, node_id=forged), 403, "Forbidden")  # a node that never joined
    others = sorted(nodes_before - {identity["node_id"]})
    if others:  # another real node: impersonated
        _error(_beat(platform, identity, node_id=others[0]), 403, "Forbidden")
    _error(_beat(platform, identity, url="http://127.0.0.1:1"), 403, "Forbidden")  # re-pointed
    _error(_beat(platform, identity, url=before["url"], cpu_millis=-1000), 422, "InvalidRequest")
    _error(_beat(platform, identity, url=before["url"], memory_mib=0), 422, "InvalidRequest")
    _error(_beat(platform, identity, url=before["url"], node_type="t" * 10_000), 422, "InvalidRequest")
    wrong = requests.post(f"{platform.url}/v1/internal/heartbeat", json={}, timeout=30,
                          headers={"Authorization": f"Bearer {identity['node_id']}:not-its-secret"})
    _error(wrong, 401, "Unauthorized")
    # The key control planes call the node with is not a credential towards a control plane.
    stolen = requests.post(f"{platform.url}/v1/internal/heartbeat", json={}, timeout=30,
                           headers={"Authorization": f"Bearer {identity['agent_key']}"})
    _error(stolen, 401, "Unauthorized")
    # Joining again with a made-up (or spent) join token gives nothing.
    rejoin = requests.post(f"{platform.url}/v1/internal/join", timeout=30,
                           json={"join_token": "cmlj_" + "0" * 40, "url": "http://127.0.0.1:1",
                                 "provider_node_id": identity["node_id"]})
    _error(rejoin, 401, "Unauthorized")

    after = {n["id"]: n for n in platform.get("/v1/nodes")}
    assert set(after) == nodes_before and forged not in after
    assert after[identity["node_id"]]["url"] == before["url"]
    assert after[identity["node_id"]]["capacity"] == before["capacity"]
    resp = platform.invoke("nodeprobe", {})
    assert resp.status_code == 200, resp.text  # the node still serves where it joined


def test_what_the_control_plane_keeps_at_rest_holds_no_secret(platform: RunningPlatform) -> None:
    secret = f"S3CRET-{uuid.uuid4().hex}"
    platform.deploy_ok("sealed", ECHO, secret_env={"TOKEN": secret})
    resp = platform.invoke("sealed", {})
    assert resp.status_code == 200 and resp.json() == secret  # the function gets it
    shown = json.dumps(platform.get("/v1/functions/sealed"))
    assert secret not in shown and "TOKEN" in shown  # its name only

    identity, _ = _a_node(platform)
    db = platform.data_dir / "cumulus.db"
    assert db.stat().st_mode & 0o777 == 0o600
    assert (platform.data_dir / "secret.key").stat().st_mode & 0o777 == 0o600
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        dump = "\n".join(con.iterdump())
    finally:
        con.close()
    raw = b"".join(p.read_bytes() for p in db.parent.glob("cumulus.db*"))  # with the WAL
    assert "sealed1:" in dump  # the sealed values are there, and read
    for value in (secret, identity["node_secret"], identity["agent_key"]):
        assert value not in dump and value.encode() not in raw
