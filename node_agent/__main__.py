"""`python -m node_agent [--config FILE]`: run a node agent (settings from env or a JSON file)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from node_agent.agent import NodeAgent
from node_agent.join import JoinError, identity
from node_agent.meter import UsageMeter
from node_agent.runtime import LABEL_NODE, ContainerRuntimeError, DockerRuntime
from node_agent.server import serve
from node_agent.settings import AgentSettings


def cleanup(settings: AgentSettings, runtime: DockerRuntime) -> int:
    """Remove every container labelled with this node (its agent is gone for good)."""
    node_id = settings.node_id
    saved = settings.data_dir / "identity.json"
    if not node_id and saved.exists():
        node_id = json.loads(saved.read_text())["node_id"]
    node_id = node_id or settings.provider_node_id  # a node that never joined is named by its provider
    if not node_id:
        return 0
    for info in runtime.list({LABEL_NODE: node_id}):
        runtime.remove(info.instance_id)
        logging.getLogger("cumulus.agent").info("event=cleanup_removed instance=%s", info.instance_id)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse settings, connect to Docker, serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m node_agent", description=__doc__)
    parser.add_argument("--config", type=Path, help="JSON file with AgentSettings fields")
    parser.add_argument("--cleanup", action="store_true",
                        help="remove this node's containers and exit (after the agent died)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    values = json.loads(args.config.read_text()) if args.config else {}
    settings = AgentSettings(**values)
    try:
        runtime = DockerRuntime(settings.docker_host or None)
    except ContainerRuntimeError as exc:
        logging.getLogger("cumulus.agent").error("event=agent_failed error=%s", exc)
        return 1
    if args.cleanup:
        return cleanup(settings, runtime)
    from node_agent.image import ImageBuildError, ensure_image

    try:  # a registry reference is pulled if missing; none: built from Debian's mirror
        settings.image = ensure_image(runtime.client, settings.image)
    except ImageBuildError as exc:
        logging.getLogger("cumulus.agent").error("event=agent_failed error=%s", exc)
        return 1
    async def run() -> None:
        try:
            me = await identity(settings)
        except JoinError as exc:
            logging.getLogger("cumulus.agent").error("event=join_failed error=%s", exc)
            raise SystemExit(1) from exc
        agent = NodeAgent(node_id=me.node_id, runtime=runtime, data_dir=settings.data_dir,
                          image=settings.image, agent_key=me.agent_key, credential=me.credential,
                          start_timeout_s=settings.start_timeout_s,
                          control_plane_url=settings.control_plane_url,
                          capacity=(settings.cpu_millis, settings.memory_mib),
                          egress_network=settings.egress_network, egress_deny=settings.egress_deny,
                          agent_port=settings.listen_port, gate_binary=settings.gate_binary,
                          meter=UsageMeter(settings.data_dir / "usage.jsonl", enabled=settings.metering))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, agent, stop)

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
