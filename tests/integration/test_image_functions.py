"""Image functions through the real parts: OCI images built here (no registry) for Lambda, one with
AWS's runtime interface client (awslambdaric) and one with a custom runtime of its own, deployed as
a `docker save` archive that the node loads or as an image already on the node's engine; the node
agent serves them the Lambda Runtime API inside their own network namespace; their results, handler
errors, init errors, crashes and timeouts come back as a zip function's do, under the same limits."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from helpers import RunningPlatform, containers_of, docker_client, start_platform
from lambda_images import CUSTOM_RUNTIME_HANDLER, build_awslambdaric_image, build_custom_runtime_image

from node_agent.image import DEFAULT_RECIPE

pytestmark = [pytest.mark.docker, pytest.mark.packages, pytest.mark.timeout(600)]

RIC_HANDLER = '''import os, sys

def handler(event, context):
    if event.get("fail"):
        raise KeyError(event["fail"])
    if event.get("die"):
        os._exit(7)
    if event.get("sleep"):
        import time
        time.sleep(event["sleep"])
    return {"got": event, "request_id": context.aws_request_id, "name": context.function_name,
            "memory": context.memory_limit_in_mb, "remaining": context.get_remaining_time_in_millis(),
            "uid": os.getuid(), "python": list(sys.version_info[:2])}
'''


@pytest.fixture(scope="module")
def platform(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    plat = start_platform(tmp_path_factory.mktemp("images"), extra_env={"CUMULUS_QUEUE_TIMEOUT_S": "60"})
    try:
        yield plat
    finally:
        plat.stop()


@pytest.fixture(scope="module")
def ric_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An awslambdaric image, saved to a tarball and then removed from the engine: the node must
    load the archive the control plane serves it."""
    client = docker_client()
    tag = build_awslambdaric_image(client, DEFAULT_RECIPE.tag, RIC_HANDLER, "cumulus-test/ric-fn:1")
    path = tmp_path_factory.mktemp("archive") / "ric-fn.tar"
    image = client.images.get(tag)
    with path.open("wb") as fh:
        for chunk in image.save(named=True):
            fh.write(chunk)
    for ref in image.tags:
        client.images.remove(ref, force=True)
    return path


@pytest.fixture(scope="module")
def custom_image() -> str:
    return build_custom_runtime_image(docker_client(), DEFAULT_RECIPE.tag, "cumulus-test/provided-fn:1")


def _created(resp: Any) -> None:
    assert resp.status_code == 201, resp.text


def _error(resp: Any, status: int, kind: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err: dict[str, Any] = resp.json()["error"]
    assert err["type"] == kind, err
    return err


def test_an_awslambdaric_image_archive_runs_unchanged(platform: RunningPlatform, ric_archive: Path) -> None:
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client().images.get("cumulus-test/ric-fn:1")
    deployed = platform.cli("deploy", "--image-archive", str(ric_archive), "--name", "ric", "--memory", "192")
    assert deployed.returncode == 0, deployed.stderr
    resp = platform.invoke("ric", {"hello": "lambda"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["got"] == {"hello": "lambda"} and body["name"] == "ric" and body["memory"] == "192"
    assert body["uid"] == 65534 and body["python"] == [3, 11] and 0 < body["remaining"] <= 30_000
    assert body["request_id"] == resp.headers["X-Request-Id"]
    config = platform.get("/v1/functions/ric")["config"]
    assert config["package_type"] == "image" and config["image"].startswith("sha256:")
    err = _error(platform.invoke("ric", {"fail": "missing"}), 500, "HandlerError")
    assert "KeyError" in err["message"] and "missing" in err["message"]
    again = platform.invoke("ric", {"hello": "again"})  # the same instance serves on
    assert again.status_code == 200 and again.json()["got"] == {"hello": "again"}


def test_an_image_on_the_node_with_a_custom_runtime(platform: RunningPlatform, custom_image: str) -> None:
    _created(platform.deploy_image("provided", image=custom_image, network="none"))
    resp = platform.invoke("provided", {"value": 3})
    assert resp.status_code == 200, resp.text
    assert resp.json()["echo"] == {"value": 3}
    assert resp.json()["arn"].endswith(":function:provided")
    err = _error(platform.invoke("provided", {"fail": "bad input"}), 500, "HandlerError")
    assert "ValueError" in err["message"] and "bad input" in err["message"]
    [summary] = [c for c in containers_of("provided") if c["State"] == "running"]
    host = docker_client().api.inspect_container(summary["Id"])["HostConfig"]
    assert host["ReadonlyRootfs"] and host["NetworkMode"] == "none" and host["CapDrop"] == ["ALL"]
    assert host["Memory"] == 256 * 2**20 and host["PidsLimit"] == 256
    assert "no-new-privileges" in host["SecurityOpt"]


def test_an_init_error_is_reported_per_call(platform: RunningPlatform, custom_image: str) -> None:
    _created(platform.deploy_image("badinit", image=custom_image, env={"FAIL_INIT": "no config"}))
    err = _error(platform.invoke("badinit", {}), 500, "FunctionInitError")
    assert "no config" in err["message"]
    _created(platform.deploy_image("nohandler", image=custom_image, command=["nosuchmodule.handler"]))
    err = _error(platform.invoke("nohandler", {}), 500, "FunctionInitError")
    assert "nosuchmodule" in err["message"]


def test_a_crash_and_a_timeout_end_the_instance(platform: RunningPlatform, ric_archive: Path) -> None:
    slow = platform.cli("deploy", "--image-archive", str(ric_archive), "--name", "ricslow", "--timeout", "2")
    assert slow.returncode == 0, slow.stderr
    _error(platform.invoke("ricslow", {"sleep": 10}), 504, "FunctionTimeout")
    _error(platform.invoke("ricslow", {"die": True}), 502, "FunctionCrashed")
    ok = platform.invoke("ricslow", {"n": 1})  # a new instance replaces the dead one
    assert ok.status_code == 200, ok.text
    # awslambdaric's own init error: a handler module that does not import.
    broken = platform.cli("deploy", "--image-archive", str(ric_archive), "--name", "ricinit",
                          "--command", "nosuchmodule.handler")
    assert broken.returncode == 0, broken.stderr
    err = _error(platform.invoke("ricinit", {}), 500, "FunctionInitError")
    assert "nosuchmodule" in err["message"] and "ImportModuleError" in err["message"]


def test_bad_images_are_refused_before_anything_is_stored(platform: RunningPlatform,
                                                          tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    resp = platform.cli("deploy", "--image-archive", str(junk), "--name", "junk")
    assert resp.returncode != 0 and "not a tar archive" in resp.stderr and "Traceback" not in resp.stderr
    bad_ref = platform.deploy_image("badref", image="UPPER CASE")
    assert bad_ref.status_code == 422 and "image reference" in bad_ref.json()["error"]["message"]
    none = platform.deploy_image("noimage")
    assert none.status_code == 422 and none.json()["error"]["type"] == "InvalidConfig"
    mixed = platform.deploy("mixed", {"main.py": "x = 1\n"}, package_type="image", image="a:1")
    assert mixed.status_code == 400 and mixed.json()["error"]["type"] == "InvalidCode"
    for name in ("junk", "badref", "noimage", "mixed"):
        assert platform.invoke(name, {}).status_code == 404


def test_an_archive_cannot_take_over_a_tag_of_the_node(platform: RunningPlatform, tmp_path: Path) -> None:
    client = docker_client()
    own = build_custom_runtime_image(client, DEFAULT_RECIPE.tag, "cumulus-test/hostile-fn:1",
                                     handler_source=CUSTOM_RUNTIME_HANDLER + "# its own image\n")
    victim = "cumulus-test/victim:1"
    client.images.get(DEFAULT_RECIPE.tag).tag(victim)  # stands for the runtime image's own tag
    original = client.images.get(victim).id
    saved = tmp_path / "saved.tar"
    with saved.open("wb") as fh:
        for chunk in client.images.get(own).save(named=True):
            fh.write(chunk)
    hostile = tmp_path / "hostile.tar"  # the same image, its archive claiming the victim's tag
    with tarfile.open(saved) as src, tarfile.open(hostile, "w") as out:
        for info in src:
            data = src.extractfile(info) if info.isfile() else None
            if info.name == "manifest.json" and data is not None:
                manifest = json.loads(data.read())
                manifest[0]["RepoTags"] = [victim]
                raw = json.dumps(manifest).encode()
                info.size = len(raw)
                out.addfile(info, io.BytesIO(raw))
            else:
                out.addfile(info, data)
    image = client.images.get(own)
    for ref in image.tags:  # gone from the engine: the node must load the archive
        client.images.remove(ref)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(image.id)
    try:
        deployed = platform.cli("deploy", "--image-archive", str(hostile), "--name", "hostile")
        assert deployed.returncode == 0, deployed.stderr
        resp = platform.invoke("hostile", {"value": 1})
        assert resp.status_code == 200, resp.text
        assert client.images.get(victim).id == original  # loaded by id, its claimed name dropped
    finally:
        client.images.remove(victim)
