"""A restarted node agent finds its containers again from their labels (real Docker)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from helpers import DOCKER_HOST, containers_of

from node_agent import protocol as p
from node_agent.agent import SHIM_DIR, NodeAgent
from node_agent.image import DEFAULT_RECIPE
from node_agent.runtime import ContainerSpec, DockerRuntime

pytestmark = pytest.mark.docker


def _agent(data_dir: Path) -> NodeAgent:
    return NodeAgent(node_id="recovery-node", runtime=DockerRuntime(DOCKER_HOST), data_dir=data_dir,
                     image=DEFAULT_RECIPE.tag, agent_key="t", credential="recovery-node:t")


def _cached_code(tmp_path: Path, digest: str, function: str, source: str) -> tuple[Path, p.InstanceStart]:
    """Code already in the agent's code cache (no fetch needed), and a start of it."""
    code = tmp_path / "code" / digest
    code.mkdir(parents=True)
    (code / "main.py").write_text(source)
    return code, p.InstanceStart(function=function, version=1, code_digest=digest,
                                 code_url="http://127.0.0.1:9/unused", memory_mib=64, cpu_millis=250,
                                 timeout_s=5)


def test_restarted_agent_adopts_running_instances(tmp_path: Path, docker_engine: None) -> None:
    _, start = _cached_code(tmp_path, "digest1", "recov",
                               "def handler(event, context):\n    return {'got': event}\n")

    async def scenario() -> None:
        first = _agent(tmp_path)
        await first.open()
        await first.start("recov-1", start)
        _, headers, body = await first.invoke("recov-1", b'{"n": 1}', "r1", 5000)
        assert headers[p.OUTCOME_HEADER] == p.OK and json.loads(body) == {"got": {"n": 1}}
        await first.close(remove_instances=False)  # as if the agent crashed

        second = _agent(tmp_path)
        await second.open()
        try:
            assert list(second.instances) == ["recov-1"]
            _, headers, body = await second.invoke("recov-1", b'{"n": 2}', "r2", 5000)
            assert headers[p.OUTCOME_HEADER] == p.OK and json.loads(body) == {"got": {"n": 2}}
        finally:
            await second.close(remove_instances=True)

    asyncio.run(scenario())
    assert containers_of("recov") == []


def test_dead_containers_are_removed_on_recovery(tmp_path: Path, docker_engine: None) -> None:
    _, start = _cached_code(tmp_path, "digest2", "recov-dead",
                               "def handler(event, context):\n    return 1\n")

    async def scenario() -> None:
        first = _agent(tmp_path)
        await first.open()
        await first.start("recov-dead-1", start)
        await first.close(remove_instances=False)
        first.runtime.client.api.kill("cumulus-recov-dead-1")  # type: ignore[attr-defined]
        second = _agent(tmp_path)
        await second.open()
        assert second.instances == {}
        await second.close(remove_instances=True)

    asyncio.run(scenario())
    assert containers_of("recov-dead") == []


def test_a_restarted_agent_replaces_image_instances_and_adopts_networked_ones(
        tmp_path: Path, docker_engine: None) -> None:
    """An image instance's Runtime API lived in the agent that died: the new agent removes it (the
    control plane starts another). A zip instance with egress keeps its rules and is adopted."""
    from lambda_images import build_custom_runtime_image

    image = build_custom_runtime_image(DockerRuntime(DOCKER_HOST).client, DEFAULT_RECIPE.tag,
                                       "cumulus-test/provided-fn:1")
    code = tmp_path / "code" / "digest3"
    code.mkdir(parents=True)
    (code / "main.py").write_text("def handler(event, context):\n    return {'got': event}\n")
    network = "cumulus-recovery-egress"
    image_start = p.InstanceStart(function="recov-img", version=1, code_digest="", code_url="",
                                  memory_mib=64, cpu_millis=250, timeout_s=5, package_type="image",
                                  image=image)
    zip_start = p.InstanceStart(function="recov-net", version=1, code_digest="digest3",
                                code_url="http://127.0.0.1:9/unused", memory_mib=64, cpu_millis=250,
                                timeout_s=5, network="egress")

    def agent() -> NodeAgent:
        return NodeAgent(node_id="recovery-node", runtime=DockerRuntime(DOCKER_HOST), data_dir=tmp_path,
                         image=DEFAULT_RECIPE.tag, agent_key="t", credential="recovery-node:t",
                         egress_network=network)

    async def scenario() -> None:
        first = agent()
        await first.open()
        await first.start("recov-img-1", image_start)
        await first.start("recov-net-1", zip_start)
        _, headers, body = await first.invoke("recov-img-1", b'{"n": 1}', "r1", 5000)
        assert headers[p.OUTCOME_HEADER] == p.OK and json.loads(body)["echo"] == {"n": 1}
        await first.close(remove_instances=False)  # as if the agent crashed

        second = agent()
        await second.open()
        try:
            assert list(second.instances) == ["recov-net-1"]
            _, headers, body = await second.invoke("recov-net-1", b'{"n": 2}', "r2", 5000)
            assert headers[p.OUTCOME_HEADER] == p.OK and json.loads(body) == {"got": {"n": 2}}
        finally:
            await second.close(remove_instances=True)

    try:
        asyncio.run(scenario())
        assert containers_of("recov-img") == [] and containers_of("recov-net") == []
    finally:
        DockerRuntime(DOCKER_HOST).client.networks.get(network).remove()


def test_a_container_the_agent_does_not_know_is_swept(tmp_path: Path, docker_engine: None) -> None:
    """A container of this node outside the agent's instances (the engine made it after the agent
    gave up on its create, or its removal failed) is removed; the agent's own ones are not."""
    code, start = _cached_code(tmp_path, "digest4", "swept",
                               "def handler(event, context):\n    return 'kept'\n")

    async def scenario() -> None:
        agent = _agent(tmp_path)
        await agent.open()
        try:
            await agent.start("swept-1", start)
            stray = ContainerSpec(instance_id="swept-stray", node_id=agent.node_id, function="swept",
                                  version=1, image=DEFAULT_RECIPE.tag, code_dir=code, shim_dir=SHIM_DIR,
                                  memory_mib=64, cpu_millis=250)
            await asyncio.to_thread(agent.runtime.run, stray)
            assert len(containers_of("swept")) == 2
            assert await agent.sweep() == ["swept-stray"]
            assert [c["Labels"]["io.cumulus.instance"] for c in containers_of("swept")] == ["swept-1"]
            _, headers, body = await agent.invoke("swept-1", b"{}", "r1", 5000)
            assert headers[p.OUTCOME_HEADER] == p.OK and json.loads(body) == "kept"
            assert await agent.sweep() == []
        finally:
            await agent.close(remove_instances=True)

    asyncio.run(scenario())
    assert containers_of("swept") == []
