"""/v1/functions in-process: deploy, read, list, redeploy, delete; every bad input is a typed 4xx
before anything runs; only admins change functions (a reader through a dependency override)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import OK, Api, error, serve
from helpers import make_zip

from control_plane.api import current_user
from control_plane.identity import Principal, Role


def test_deploy_read_list_redeploy_delete(api: Api) -> None:
    resp = api.deploy("crud", memory_mb=128, env={"GREETING": "hi"})
    assert resp.status_code == 201, resp.text
    url = f"{api.platform.settings.url}/v1/functions/crud/invoke"
    assert resp.json() == {"name": "crud", "tenant": "default", "version": 1, "url": url}
    got = api.client.get("/v1/functions/crud", headers=api.headers).json()
    assert got["version"] == 1 and got["url"] == url
    assert got["config"]["memory_mb"] == 128 and got["config"]["env"] == {"GREETING": "hi"}
    assert got["instances"] == got["starting"] == got["in_flight"] == 0
    assert got["code_size"] > 0 and len(got["code_digest"]) == 64
    assert api.deploy("crud", memory_mb=256).json()["version"] == 2
    listed = {f["name"]: f for f in api.client.get("/v1/functions", headers=api.headers).json()}
    assert listed["crud"]["version"] == 2 and listed["crud"]["config"]["memory_mb"] == 256
    assert api.client.delete("/v1/functions/crud", headers=api.headers).status_code == 204
    error(api.client.get("/v1/functions/crud", headers=api.headers), 404, "FunctionNotFound")
    assert not (api.platform.functions.artifacts_dir / f"{got['code_digest']}.zip").exists()


def test_a_call_with_no_node_is_a_clear_no_capacity(api: Api) -> None:
    assert api.deploy("nowhere").status_code == 201
    err = error(api.client.post("/v1/functions/nowhere/invoke", headers=api.headers, content=b"{}"),
                503, "NoCapacity")
    assert "nowhere" in err["message"]


def test_invalid_zip(api: Api) -> None:
    resp = api.client.post("/v1/functions", headers=api.headers,
                           data={"config": json.dumps({"name": "badzip"})},
                           files={"code": ("code.zip", b"not a zip", "application/zip")})
    error(resp, 400, "InvalidCode")


@pytest.mark.parametrize("member", ["../evil.py", "/abs/evil.py", "a/../../evil.py"])
def test_zip_escaping_its_folder(api: Api, member: str) -> None:
    error(api.deploy("escape", {**OK, member: "x = 1\n"}), 400, "InvalidCode")
    error(api.client.get("/v1/functions/escape", headers=api.headers), 404, "FunctionNotFound")


def test_missing_handler_module(api: Api) -> None:
    err = error(api.deploy("nomain", {"other.py": "x = 1\n"}), 400, "InvalidCode")
    assert "main" in err["message"]


@pytest.mark.parametrize("config", [
    {"name": "Bad Name"},
    {"name": "ok", "memory_mb": 1},
    {"name": "ok", "timeout_s": -1},
    {"name": "ok", "min_instances": 5, "max_instances": 2},
    {"name": "ok", "handler": "no-dots"},
    {"name": "ok", "env": {"CUMULUS_X": "1"}},
])
def test_invalid_config(api: Api, config: dict[str, object]) -> None:
    err = error(api.deploy("ok", config=config), 422, "InvalidConfig")
    assert err["details"], err


def test_config_that_is_not_json(api: Api) -> None:
    error(api.deploy("x", config="{name"), 422, "InvalidConfig")


def test_unknown_function(api: Api) -> None:
    error(api.client.post("/v1/functions/ghost/invoke", headers=api.headers, content=b"{}"), 404,
          "FunctionNotFound")
    error(api.client.get("/v1/functions/ghost", headers=api.headers), 404, "FunctionNotFound")
    error(api.client.delete("/v1/functions/ghost", headers=api.headers), 404, "FunctionNotFound")
    error(api.client.get("/v1/functions/ghost/logs", headers=api.headers), 404, "FunctionNotFound")


def test_an_event_over_the_limit_is_refused_before_the_function_is_looked_up(api: Api) -> None:
    big = b'"' + b"x" * (6 * 1024 * 1024) + b'"'
    error(api.client.post("/v1/functions/ghost/invoke", headers=api.headers, content=big), 413,
          "PayloadTooLarge")


def test_only_admins_deploy_or_delete(api: Api) -> None:
    assert api.deploy("kept").status_code == 201
    api.app.dependency_overrides[current_user] = lambda: Principal("reader", "default", Role.INVOKER)
    try:
        error(api.deploy("kept"), 403, "Forbidden")
        error(api.client.delete("/v1/functions/kept", headers=api.headers), 403, "Forbidden")
        assert api.client.get("/v1/functions/kept", headers=api.headers).status_code == 200
    finally:
        api.app.dependency_overrides.clear()
    assert api.client.get("/v1/functions/kept", headers=api.headers).json()["version"] == 1


def test_requirements_are_checked_before_anything_is_fetched_or_built(api: Api) -> None:
    refused = "RequirementsInstallFailed"
    err = error(api.deploy("reqs", {**OK, "requirements.txt": "-r /etc/passwd\n"}), 422, refused)
    assert "line 1" in err["message"] and "/etc/passwd" not in err["message"]
    assert "root:" not in err["message"]
    err = error(api.deploy("reqs", {**OK, "requirements.txt": "evil @ file:///etc\n"}), 422, refused)
    assert "/etc" not in err["message"]
    err = error(api.deploy("reqs", {**OK, ".cumulus/deps/x.py": "x = 1\n"}), 400, "InvalidCode")
    assert ".cumulus" in err["message"]
    error(api.client.get("/v1/functions/reqs", headers=api.headers), 404, "FunctionNotFound")


def test_a_deploy_with_requirements_and_no_build_engine_is_503_and_creates_nothing(tmp_path: Path) -> None:
    for gone in serve(tmp_path, docker_host=f"unix://{tmp_path}/no-engine.sock"):
        err = error(gone.deploy("needsdeps", {**OK, "requirements.txt": "tinylib==1.0\n"}), 503,
                    "BuildUnavailable")
        assert "does not answer" in err["message"]
        error(gone.client.get("/v1/functions/needsdeps", headers=gone.headers), 404, "FunctionNotFound")
        assert gone.deploy("nodeps").status_code == 201  # code without requirements needs no build


def test_network_runtime_and_package_settings_are_checked_and_defaulted(api: Api) -> None:
    assert api.deploy("netdefault").status_code == 201
    shown = api.client.get("/v1/functions/netdefault", headers=api.headers).json()["config"]
    assert (shown["network"], shown["runtime"], shown["package_type"]) == ("egress", "python3.11", "zip")
    assert api.deploy("netnone", network="none").status_code == 201
    assert api.client.get("/v1/functions/netnone", headers=api.headers).json()["config"]["network"] == "none"
    err = error(api.deploy("netbad", network="internet"), 422, "InvalidConfig")
    assert "network" in err["message"]
    err = error(api.deploy("rtbad", runtime="python3.9"), 422, "InvalidConfig")
    assert "python3.11, python3.13" in err["message"]
    err = error(api.deploy("zipimage", image="alpine:3"), 422, "InvalidConfig")
    assert "image functions" in err["message"]
    error(api.deploy("zipcommand", command=["x"]), 422, "InvalidConfig")
    for name in ("netbad", "rtbad", "zipimage", "zipcommand"):
        error(api.client.get(f"/v1/functions/{name}", headers=api.headers), 404, "FunctionNotFound")


def test_a_cluster_can_make_no_network_the_default(tmp_path: Path) -> None:
    for none_api in serve(tmp_path, default_network="none"):
        assert none_api.deploy("quiet").status_code == 201
        shown = none_api.client.get("/v1/functions/quiet", headers=none_api.headers).json()["config"]
        assert shown["network"] == "none"
        assert none_api.deploy("chatty", network="egress").status_code == 201
        assert none_api.client.get("/v1/functions/chatty",
                                   headers=none_api.headers).json()["config"]["network"] == "egress"


def test_a_named_build_shows_its_stages_and_a_bad_name_is_refused(api: Api) -> None:
    resp = api.client.post("/v1/functions", headers={**api.headers, "X-Cumulus-Build-Id": "build-0001"},
                           files={"code": ("code.zip", make_zip(OK), "application/zip")},
                           data={"config": json.dumps({"name": "named"})})
    assert resp.status_code == 201, resp.text
    build = api.client.get("/v1/builds/build-0001", headers=api.headers).json()
    assert build["done"] is True and build["error"] == ""
    # No requirements: nothing to fetch or install (at most the runtime image, on its first deploy).
    assert all("runtime image" in s["message"] for s in build["stages"])
    error(api.client.get("/v1/builds/unknown-0001", headers=api.headers), 404, "NotFound")
    bad = api.client.post("/v1/functions", headers={**api.headers, "X-Cumulus-Build-Id": "../x"},
                          files={"code": ("code.zip", make_zip(OK), "application/zip")},
                          data={"config": json.dumps({"name": "badbuild"})})
    error(bad, 422, "InvalidConfig")


def test_image_functions_are_checked_before_anything_is_stored(api: Api, tmp_path: Path) -> None:
    config = json.dumps({"name": "img", "package_type": "image"})
    resp = api.client.post("/v1/functions", headers=api.headers, files={"config": (None, config)})
    assert "needs an image" in error(resp, 422, "InvalidConfig")["message"]
    resp = api.client.post("/v1/functions", headers=api.headers, data={"config": config},
                           files={"image": ("i.tar", b"junk" * 100, "application/x-tar")})
    assert "not a tar archive" in error(resp, 400, "InvalidCode")["message"]
    with_code = api.client.post("/v1/functions", headers=api.headers, data={"config": config},
                                files={"code": ("c.zip", make_zip(OK), "application/zip")})
    error(with_code, 400, "InvalidCode")
    no_code = api.client.post("/v1/functions", headers=api.headers,
                              files={"config": (None, json.dumps({"name": "nocode"}))})
    error(no_code, 400, "InvalidCode")
    ref = json.dumps({"name": "img", "package_type": "image", "image": "registry.example:5000/team/fn:1"})
    named = api.client.post("/v1/functions", headers=api.headers, files={"config": (None, ref)})
    assert named.status_code == 201, named.text
    shown = api.client.get("/v1/functions/img", headers=api.headers).json()
    assert shown["config"]["image"] == "registry.example:5000/team/fn:1" and shown["code_size"] == 0
