"""Node agents' routes in-process: join tokens are single-use and expiring and give each node its own
credential; a heartbeat makes a node (for the node of its credential only, from the URL it joined
with) and tells every control plane; artifacts and the agent package are served to nodes only."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
import zipfile

import pytest
from conftest import Api, error

from node_agent.protocol import Heartbeat


def _join(api: Api, node_id: str, url: str = "http://127.0.0.1:9") -> dict[str, str]:
    """Join a node; its agent's headers towards the control plane."""
    token = api.platform.store.issue_join_token(f"req-{uuid.uuid4().hex}", "test", "t", ttl_s=60)
    resp = api.client.post("/v1/internal/join",
                           json={"join_token": token, "url": url, "provider_node_id": node_id})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {node_id}:{resp.json()['node_secret']}"}


def _beat(node_id: str, url: str = "http://127.0.0.1:9", **more: object) -> dict[str, object]:
    return Heartbeat(node_id=node_id, url=url, provider="test", node_type="t", cpu_millis=2000,
                     memory_mib=4096, **more).model_dump()  # type: ignore[arg-type]


def _node_headers(api: Api) -> dict[str, str]:
    return _join(api, "n-any")


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
    answer = joined.json()
    assert answer["node_id"] == "i-123" and answer["agent_key"] == api.platform.keys.agent_key("i-123")
    assert answer["node_secret"] not in json.dumps(api.platform.store.node_credential("i-123").model_dump())
    assert api.platform.fleet.joined["i-123"] == "req-once"
    error(api.client.post("/v1/internal/join", json=body), 401, "Unauthorized")


def test_a_node_credential_reports_for_its_own_node_from_its_own_url_only(api: Api) -> None:
    mine, theirs = _join(api, "n-mine", "http://127.0.0.1:7001"), _join(api, "n-theirs", "http://127.0.0.1:7002")
    beat = api.client.post("/v1/internal/heartbeat", headers=mine, json=_beat("n-mine", "http://127.0.0.1:7001"))
    assert beat.status_code == 200, beat.text
    error(api.client.post("/v1/internal/heartbeat", headers=mine, json=_beat("n-theirs", "http://127.0.0.1:7002")),
          403, "Forbidden")  # impersonating another node
    error(api.client.post("/v1/internal/heartbeat", headers=theirs, json=_beat("n-theirs", "http://evil:1")),
          403, "Forbidden")  # re-pointing its node elsewhere
    error(api.client.post("/v1/internal/heartbeat", headers=theirs, json=_beat("n-never")), 403, "Forbidden")
    error(api.client.post("/v1/internal/heartbeat", headers={"Authorization": "Bearer n-mine:wrong"},
                          json=_beat("n-mine", "http://127.0.0.1:7001")), 401, "Unauthorized")
    error(api.client.post("/v1/internal/heartbeat", headers=api.headers, json=_beat("n-mine")), 401,
          "Unauthorized")  # a user's token is no node's
    nodes = api.platform.fleet.nodes
    assert "n-mine" in nodes and "n-never" not in nodes and "n-theirs" not in nodes  # no refused beat counted


@pytest.mark.parametrize("bad", [{"cpu_millis": -1000}, {"memory_mib": 0}, {"cpu_millis": 10**12},
                                 {"url": "http://x/" + "a" * 5000}])
def test_a_heartbeat_out_of_bounds_is_refused(api: Api, bad: dict[str, object]) -> None:
    headers = _join(api, "n-bounded", "http://127.0.0.1:7003")
    body = {**_beat("n-bounded", "http://127.0.0.1:7003"), **bad}
    error(api.client.post("/v1/internal/heartbeat", headers=headers, json=body), 422, "InvalidRequest")


def test_instances_no_control_plane_placed_are_not_taken_as_the_nodes(api: Api) -> None:
    headers = _join(api, "n-liar", "http://127.0.0.1:7004")
    placed = api.platform.keys.instance_id("f", "n-liar")
    made_up = "f-0123456789ab01234567"
    elsewhere = api.platform.keys.instance_id("f", "n-other")
    reports = [{"instance_id": i, "function": "f", "version": 1, "state": "ready", "memory_mib": 256,
                "cpu_millis": 250} for i in (placed, made_up, elsewhere)]
    resp = api.client.post("/v1/internal/heartbeat", headers=headers,
                           json=_beat("n-liar", "http://127.0.0.1:7004", instances=reports))
    assert resp.status_code == 200, resp.text
    node = api.platform.fleet.nodes["n-liar"]
    assert [i.instance_id for i in node.instances] == [placed]
    assert sorted(i.instance_id for i in node.unknown) == sorted([made_up, elsewhere])


def test_a_heartbeat_makes_a_ready_node_and_lists_the_control_planes(api: Api) -> None:
    resp = api.client.post("/v1/internal/heartbeat", headers=_join(api, "n-beat"), json=_beat("n-beat"))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"ok": True, "control_planes": [api.platform.settings.url]}
    [node] = [n for n in api.client.get("/v1/nodes", headers=api.headers).json() if n["id"] == "n-beat"]
    assert node["state"] == "ready" and node["capacity"] == {"cpu_millis": 2000, "memory_mib": 4096}
    error(api.client.post("/v1/internal/heartbeat", headers=_join(api, "n-bad"), json={"node_id": "n-bad"}),
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
