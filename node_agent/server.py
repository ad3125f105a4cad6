"""The node agent's HTTP API (aiohttp: light, and fast enough to sit on the invocation path)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from node_agent import protocol as p
from node_agent.agent import InstanceStartError, NodeAgent, NodeFull
from node_agent.meter import send_usage
from node_agent.settings import AgentSettings

log = logging.getLogger("cumulus.agent")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message}}, status=status)


def build_app(agent: NodeAgent) -> web.Application:
    """Routes: health, instance lifecycle, and the invocation proxy; all but health need the agent's
    key (which control planes derive for this node alone)."""
    expected = f"Bearer {agent.agent_key}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/healthz":
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return _error(401, "Unauthorized", "missing or wrong agent key")
        return await handler(request)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "node_id": agent.node_id})

    async def list_instances(request: web.Request) -> web.Response:
        return web.json_response([i.report().model_dump() for i in agent.instances.values()])

    async def start_instance(request: web.Request) -> web.Response:
        try:
            req = p.InstanceStart.model_validate_json(await request.read())
        except ValidationError as exc:
            return _error(422, "InvalidRequest", str(exc))
        try:
            inst = await agent.start(request.match_info["instance_id"], req)
        except NodeFull as exc:
            return _error(409, "NodeFull", str(exc))
        except InstanceStartError as exc:
            return _error(502, "InstanceStartError", str(exc))
        return web.json_response(inst.report().model_dump())

    async def stop_instance(request: web.Request) -> web.Response:
        await agent.stop(request.match_info["instance_id"])
        return web.Response(status=204)

    async def invoke(request: web.Request) -> web.Response:
        body = await request.read()
        status, headers, payload = await agent.invoke(
            request.match_info["instance_id"], body,
            request.headers.get(p.REQUEST_ID_HEADER, ""),
            int(request.headers.get(p.TIMEOUT_HEADER, "300000")),
            cold=request.headers.get(p.COLD_START_HEADER) == "1")
        return web.Response(status=status, headers=headers, body=payload)

    app = web.Application(middlewares=[auth], client_max_size=8 * 1024 * 1024)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/instances", list_instances)
    app.router.add_put("/v1/instances/{instance_id}", start_instance)
    app.router.add_delete("/v1/instances/{instance_id}", stop_instance)
    app.router.add_post("/v1/instances/{instance_id}/invoke", invoke)
    return app


_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def reachable(peer: str, configured: str) -> str:
    """A control plane's advertised URL as this node reaches it: a loopback address means "the
    machine of the control plane I was configured with" when that one is not on loopback (e.g.
    QEMU's 10.0.2.2 for the host), so control planes side by side on one host work from VMs."""
    peer_url, conf_url = urlsplit(peer.rstrip("/")), urlsplit(configured)
    if peer_url.hostname in _LOOPBACK and conf_url.hostname and conf_url.hostname not in _LOOPBACK:
        return peer_url._replace(netloc=f"{conf_url.hostname}:{peer_url.port or 80}").geturl()
    return peer_url.geturl()


async def heartbeat_loop(agent: NodeAgent, settings: AgentSettings, started_at: float) -> None:
    """Report capacity and instances to the control planes, forever; failures are logged, not fatal.

    The agent starts with the one control plane it was configured with; every answer lists the
    cluster's live control planes (HA: several share a database), and the agent reports to each,
    so every one of them sees the whole fleet and a new leader needs no catching up.
    """
    http = agent._http
    assert http is not None
    configured = settings.control_plane_url.rstrip("/")
    peers: set[str] = set()
    failures: dict[str, int] = {}

    async def send(base: str, body: str) -> list[str] | None:
        try:
            async with http.post(base + "/v1/internal/heartbeat", data=body,
                                 headers={"Content-Type": "application/json"},
                                 timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status != 200:
                    raise aiohttp.ClientError(f"HTTP {resp.status}")
                answer = p.HeartbeatReply.model_validate_json(await resp.read())
            if failures.pop(base, 0):
                log.info("event=heartbeat_restored control_plane=%s", base)
                # A control plane is back: the usage held while none answered goes now, not at
                # the sender's next backed-off try (a node lost soon after would take it along).
                agent.meter.kick.set()
            return [reachable(u, configured) for u in answer.control_planes]
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            n = failures[base] = failures.get(base, 0) + 1
            if n in (1, 10) or n % 100 == 0:
                log.warning("event=heartbeat_failed control_plane=%s failures=%d error=%s", base, n, exc)
            return None

    while True:
        beat = p.Heartbeat(node_id=agent.node_id, url=settings.url(), provider=settings.provider,
                           node_type=settings.node_type, cpu_millis=settings.cpu_millis,
                           memory_mib=settings.memory_mib, started_at=started_at,
                           instances=[i.report() for i in agent.instances.values()])
        body = beat.model_dump_json()
        targets = sorted({configured} | peers)
        answers = await asyncio.gather(*(send(base, body) for base in targets))
        lists = [a for a in answers if a is not None]
        if lists:  # the live control planes as the answering ones see them
            peers = {u for listed in lists for u in listed}
        agent.control_planes = sorted({configured} | peers)
        await asyncio.sleep(settings.heartbeat_interval_s)


async def sweep_loop(agent: NodeAgent, interval_s: float) -> None:
    """Remove stray containers of this node every `interval_s` (`NodeAgent.sweep`), forever."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await agent.sweep()
        except Exception as exc:  # the engine is away: next time
            log.warning("event=sweep_failed error=%r", exc)


def usage_poster(agent: NodeAgent) -> Callable[[list[dict[str, Any]]], Awaitable[None]]:
    """Posts usage records to the first control plane that commits them (the configured one, then
    the others it learned of: HA, every one stores usage)."""

    async def post(records: list[dict[str, Any]]) -> None:
        http = agent._http
        assert http is not None
        body = json.dumps({"node_id": agent.node_id, "records": records})
        problems = []
        for base in dict.fromkeys([agent.control_plane_url, *agent.control_planes]):
            try:
                async with http.post(base + p.USAGE_ROUTE, data=body,
                                     headers={"Content-Type": "application/json"},
                                     timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    if resp.status == 200:
                        return
                    problems.append(f"{base}: HTTP {resp.status}")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                problems.append(f"{base}: {exc!r}")
        raise ConnectionError("; ".join(problems) or "no control plane")

    return post


async def serve(settings: AgentSettings, agent: NodeAgent, stop: asyncio.Event) -> None:
    """Run the agent until `stop` is set; a graceful stop removes this node's instances."""
    await agent.open()
    runner = web.AppRunner(build_app(agent), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.listen_host, settings.listen_port)
    await site.start()
    log.info("event=agent_listening node=%s url=%s", agent.node_id, settings.url())
    beat = asyncio.create_task(heartbeat_loop(agent, settings, time.time()))
    sweeper = asyncio.create_task(sweep_loop(agent, settings.sweep_interval_s))
    metering_done = asyncio.Event()
    usage = asyncio.create_task(send_usage(agent.meter, usage_poster(agent), metering_done))
    try:
        await stop.wait()
    finally:
        beat.cancel()
        sweeper.cancel()
        await runner.cleanup()
        await agent.close(remove_instances=True)  # meters the instances it stops
        metering_done.set()  # one last flush of the journal (sent by the next run if not now)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(usage, 5)
        log.info("event=agent_stopped node=%s", agent.node_id)
