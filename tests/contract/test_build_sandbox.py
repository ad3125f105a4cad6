"""The `BuildSandbox` contract (control_plane/functions/sandbox.py), held by `DockerBuildSandbox`
on the real engine: the interpreter it reports, a step's inputs in and output out, failures
reported as such with pip's words, bounds, no container left behind, and a clear 503 when there
is no engine or image. (What a hostile build meets inside it: tests/adversarial/test_hostile_builds.py.)"""

from __future__ import annotations

import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from helpers import DOCKER_HOST, docker_client
from package_index import sdist, wheel

from control_plane.core import BuildUnavailable
from control_plane.functions import BuildLimits, DockerBuildSandbox
from control_plane.functions.sandbox import LABEL_OWNER, LABEL_ROLE, REMOVE_ATTEMPTS
from node_agent.image import DEFAULT_RECIPE

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def sandbox(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerBuildSandbox]:
    box = DockerBuildSandbox(DOCKER_HOST, DEFAULT_RECIPE.tag, tmp_path_factory.mktemp("tools"),
                             limits=BuildLimits(memory_mib=256, cpu_millis=1000, disk_mib=64, output_mib=4),
                             owner=f"contract-{uuid.uuid4().hex[:8]}")
    yield box
    box.cleanup()


def _leftovers(box: DockerBuildSandbox) -> list[str]:
    found = docker_client().api.containers(
        all=True, filters={"label": [f"{LABEL_ROLE}=build", f"{LABEL_OWNER}={box.owner}"]})
    return [c["Id"] for c in found]


def _members(tar_path: Path) -> dict[str, bytes]:
    with tarfile.open(tar_path) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
                for m in tar.getmembers()}


def test_it_reports_the_runtime_images_python(sandbox: DockerBuildSandbox) -> None:
    found = sandbox.interpreter()
    assert found.version == (3, 11) and found.implementation == "cpython"
    assert found.machine == "x86_64" and found.glibc is not None and found.glibc[0] == 2
    assert "manylinux2014_x86_64" in found.platforms() and found.platforms()[-1] == "linux_x86_64"
    assert sandbox.interpreter() is found  # asked of the engine once per image


def test_a_step_installs_its_inputs_and_hands_back_only_its_output(sandbox: DockerBuildSandbox,
                                                                   tmp_path: Path) -> None:
    name, data = wheel("roundtrip", "2.0", {"roundtrip.py": "VALUE = 7\n"})
    (tmp_path / name).write_bytes(data)
    out = tmp_path / "out.tar"
    result = sandbox.run({f"wheels/{name}": tmp_path / name},
                         ["install", "--no-index", "--target", "/work/out/deps", f"/work/in/wheels/{name}"],
                         out, timeout_s=120)
    assert result.ok and result.exit_code == 0, result.log
    members = _members(out)
    assert members["out/deps/roundtrip.py"] == b"VALUE = 7\n"
    assert all(m == "out" or m.startswith("out/") for m in members)  # nothing but /work/out
    assert _leftovers(sandbox) == []


def test_a_failing_step_is_reported_with_pips_own_words(sandbox: DockerBuildSandbox, tmp_path: Path) -> None:
    result = sandbox.run({}, ["install", "--no-index", "--target", "/work/out/deps", "nowhere-to-be-found"],
                         tmp_path / "out.tar", timeout_s=120)
    assert not result.ok and result.failure == "failed" and result.exit_code not in (0, None)
    assert "nowhere-to-be-found" in result.log and "No matching distribution" in result.log
    assert _leftovers(sandbox) == []


def test_a_step_that_runs_too_long_is_killed_at_its_timeout(sandbox: DockerBuildSandbox,
                                                            tmp_path: Path) -> None:
    name, data = sdist("sleeper", "1.0", {"sleeper.py": ""}, build_hook="import time\ntime.sleep(600)\n")
    (tmp_path / name).write_bytes(data)
    started = time.monotonic()
    result = sandbox.run({name: tmp_path / name},
                         ["wheel", "--no-index", "--no-deps", "--no-build-isolation", "-w", "/work/out",
                          f"/work/in/{name}"], tmp_path / "out.tar", timeout_s=5)
    assert result.failure == "timed out (after 5 s)", result
    assert time.monotonic() - started < 60
    assert _leftovers(sandbox) == []


def test_an_output_over_its_bound_is_refused(sandbox: DockerBuildSandbox, tmp_path: Path) -> None:
    # 8 MiB of incompressible bytes in a wheel: installed, the output is over the 4 MiB bound.
    import os

    name, data = wheel("bulky", "1.0", {"bulky.bin": os.urandom(8 * 2**20)})
    (tmp_path / name).write_bytes(data)
    result = sandbox.run({name: tmp_path / name},
                         ["install", "--no-index", "--target", "/work/out/deps", f"/work/in/{name}"],
                         tmp_path / "out.tar", timeout_s=120)
    assert result.failure == "output too large (over 4 MiB)", result
    assert (tmp_path / "out.tar").stat().st_size <= 4 * 2**20
    assert _leftovers(sandbox) == []


def test_cleanup_removes_what_this_control_plane_left_and_nothing_else(sandbox: DockerBuildSandbox) -> None:
    client = docker_client()
    mine = client.containers.create(DEFAULT_RECIPE.tag, ["true"],
                                    labels={LABEL_ROLE: "build", LABEL_OWNER: sandbox.owner})
    theirs = client.containers.create(DEFAULT_RECIPE.tag, ["true"],
                                      labels={LABEL_ROLE: "build", LABEL_OWNER: "another-control-plane"})
    try:
        assert sandbox.cleanup() == 1
        assert _leftovers(sandbox) == []
        theirs.reload()  # still there
    finally:
        theirs.remove(force=True)
        if _leftovers(sandbox):
            mine.remove(force=True)


def test_no_engine_or_no_image_is_build_unavailable(docker_engine: None, tmp_path: Path) -> None:
    gone = DockerBuildSandbox(f"unix://{tmp_path}/no-engine.sock", DEFAULT_RECIPE.tag, tmp_path)
    with pytest.raises(BuildUnavailable, match="does not answer"):
        gone.interpreter()
    assert gone.cleanup() == 0
    unknown = DockerBuildSandbox(DOCKER_HOST, "cumulus/no-such-image:0", tmp_path)
    with pytest.raises(BuildUnavailable, match="not in the build sandbox's Docker engine"):
        unknown.run({}, ["--version"], tmp_path / "out.tar", timeout_s=30)


class _FlakyEngine:
    """The real engine's client, with the faults of a slow engine: a create that the engine carries
    out but whose answer never arrives, and removals it refuses (`refusals` times)."""

    def __init__(self, real: Any, *, lost_creates: int = 0, refusals: int = 0) -> None:
        self.real, self.lost_creates, self.refusals = real, lost_creates, refusals
        self.containers = self._Containers(self)
        self.api = self._Api(self)

    def refuse(self) -> None:
        if self.refusals:
            self.refusals -= 1
            raise docker.errors.APIError("removal of container is already in progress")

    class _Containers:
        def __init__(self, engine: _FlakyEngine) -> None:
            self.engine = engine

        def create(self, *args: Any, **kwargs: Any) -> Any:
            made = self.engine.real.containers.create(*args, **kwargs)
            if self.engine.lost_creates:
                self.engine.lost_creates -= 1
                raise docker.errors.APIError("Read timed out")
            engine = self.engine

            class Refusing:
                def __getattr__(self, name: str) -> Any:
                    return getattr(made, name)

                def remove(self, **kw: Any) -> None:
                    engine.refuse()
                    made.remove(**kw)
            return Refusing()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.engine.real.containers, name)

    class _Api:
        def __init__(self, engine: _FlakyEngine) -> None:
            self.engine = engine

        def remove_container(self, *args: Any, **kwargs: Any) -> None:
            self.engine.refuse()
            self.engine.real.api.remove_container(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.engine.real.api, name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
def flaky_box(docker_engine: None, tmp_path: Path) -> Iterator[DockerBuildSandbox]:
    box = DockerBuildSandbox(DOCKER_HOST, DEFAULT_RECIPE.tag, tmp_path / "tools",
                             owner=f"flaky-{uuid.uuid4().hex[:8]}")
    (tmp_path / "tools").mkdir()
    yield box
    box._client = box._client.real if isinstance(box._client, _FlakyEngine) else box._client
    box.cleanup()


def _version_step(box: DockerBuildSandbox, tmp_path: Path) -> Any:
    return box.run({}, ["--version"], tmp_path / "out.tar", timeout_s=60)


def test_a_container_made_by_a_create_whose_answer_was_lost_is_removed(flaky_box: DockerBuildSandbox,
                                                                       tmp_path: Path) -> None:
    flaky_box._client = _FlakyEngine(docker_client(), lost_creates=1)
    with pytest.raises(BuildUnavailable, match="could not be created"):
        _version_step(flaky_box, tmp_path)
    assert _leftovers(flaky_box) == []
    assert _version_step(flaky_box, tmp_path).ok  # and the next step goes through
    assert _leftovers(flaky_box) == []


def test_a_removal_the_engine_refuses_is_retried(flaky_box: DockerBuildSandbox, tmp_path: Path) -> None:
    flaky_box._client = _FlakyEngine(docker_client(), refusals=3)
    assert _version_step(flaky_box, tmp_path).ok
    assert _leftovers(flaky_box) == [] and flaky_box._client.refusals == 0


def test_a_container_still_refused_after_the_retries_goes_with_the_next_step(
        flaky_box: DockerBuildSandbox, tmp_path: Path) -> None:
    engine = _FlakyEngine(docker_client(), refusals=1 + REMOVE_ATTEMPTS)
    flaky_box._client = engine
    assert _version_step(flaky_box, tmp_path).ok
    assert len(_leftovers(flaky_box)) == 1  # the engine is still refusing
    assert _version_step(flaky_box, tmp_path).ok
    assert _leftovers(flaky_box) == []
