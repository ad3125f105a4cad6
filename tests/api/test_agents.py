"""Node agents' routes in-process: join tokens are single-use and expiring, heartbeats make a node
and tell every control plane, artifacts and the agent package are served to nodes only as meant."""

from __future__ import annotations

import hashlib
import io
import zipfile

from conftest import Api, error

from node_agent.protocol import Heartbeat


def _node_headers(api: Api) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.platform.node_token}"}


def test_unknown_join_token_is_refused(api: Api) -> None:
    error(api.client.post("/v1/internal/join", json={"join_token": "cmlj_nope", "url": "http://127.0.0.1:1"}),
          401, "Unauthorized")


def test_expired_join_token_is_refused(api: Api) -> None:
    token = api.platform.store.issue_join_token("req-expired", "test", "joiner", ttl_s=-1)
    error(api.client.post("/v1/internal/join", json={"join_token": token, "url": "http://127.0.0.1:1"}),
          401, "Unauthorized")


def test_a_join_token_gives_a_node_once(api: Api) -> None:
    token = api.platform.store.issue_join_token("req-once", "test", "joiner", ttl_s=60)
    body = {"join_token": token, "url": "http://127.0.0.1:1", "provider_node_id": "i-123"}
    joined = api.client.post("/v1/internal/join", json=body)
    assert joined.status_code == 200, joined.text
    assert joined.json() == {"node_id": "i-123", "node_token": api.platform.node_token}
    assert api.platform.fleet.joined["i-123"] == "req-once"
    error(api.client.post("/v1/internal/join", json=body), 401, "Unauthorized")


def test_a_heartbeat_makes_a_ready_node_and_lists_the_control_planes(api: Api) -> None:
    beat = Heartbeat(node_id="n-beat", url="http://127.0.0.1:9", provider="test", node_type="t",
                     cpu_millis=2000, memory_mib=4096)
    resp = api.client.post("/v1/internal/heartbeat", headers=_node_headers(api), json=beat.model_dump())
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"ok": True, "control_planes": [api.platform.settings.url]}
    [node] = [n for n in api.client.get("/v1/nodes", headers=api.headers).json() if n["id"] == "n-beat"]
    assert node["state"] == "ready" and node["capacity"] == {"cpu_millis": 2000, "memory_mib": 4096}
    error(api.client.post("/v1/internal/heartbeat", headers=_node_headers(api), json={"node_id": "x"}),
          422, "InvalidRequest")


def test_artifacts_are_served_to_nodes_by_digest(api: Api) -> None:
    assert api.deploy("served").status_code == 201
    digest = api.client.get("/v1/functions/served", headers=api.headers).json()["code_digest"]
    resp = api.client.get(f"/v1/internal/artifacts/{digest}", headers=_node_headers(api))
    assert resp.status_code == 200 and hashlib.sha256(resp.content).hexdigest() == digest
    assert "main.py" in zipfile.ZipFile(io.BytesIO(resp.content)).namelist()
    error(api.client.get("/v1/internal/artifacts/" + "0" * 64, headers=_node_headers(api)), 404, "NotFound")
    error(api.client.get("/v1/internal/artifacts/not-a-digest", headers=_node_headers(api)), 404, "NotFound")
    error(api.client.get(f"/v1/internal/artifacts/{digest}"), 401, "Unauthorized")


def test_the_agent_package_is_the_wheel_nodes_install(api: Api) -> None:
    name = api.platform.agent_package.wheel().name
    resp = api.client.get(f"/v1/agent/package/{name}")
    assert resp.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(resp.content)).namelist()
    assert "node_agent/shim/cumulus_wire.py" in names and "node_agent/__main__.py" in names
    error(api.client.get("/v1/agent/package/other.whl"), 404, "NotFound")


def test_events_and_control_planes(api: Api) -> None:
    kinds = [e["kind"] for e in api.client.get("/v1/events", headers=api.headers).json()]
    assert "leader_elected" in kinds
    [me] = api.client.get("/v1/control-planes", headers=api.headers).json()
    assert me["self"] and me["leader"] and me["id"] == api.platform.id
