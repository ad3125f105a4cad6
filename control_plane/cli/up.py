"""`cumulus up`: the control plane, its local nodes, and a first function, in one command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import uvicorn
from rich.console import Console
from rich.markup import escape

from control_plane.api import build_asgi
from control_plane.cli.client import Client, ClientError
from control_plane.core import FileConfig, Settings, private_dir
from control_plane.functions import zip_folder
from control_plane.identity import SecretKeyError
from control_plane.platform import Platform
from node_agent.image import ImageBuildError, ensure_runtime_image
from node_agent.runtime import ContainerRuntimeError, DockerRuntime
from placement import NodeState
from provisioners.base import ProviderError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"
console = Console(stderr=True, soft_wrap=True)


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM once it has shut down, which would kill us before the
    nodes are stopped; `run` handles those signals itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class UpError(Exception):
    """`cumulus up` cannot start; the message says what to do."""


def _cumulus_command() -> str:
    exe = shutil.which("cumulus")
    if exe and Path(exe).resolve() == Path(sys.argv[0]).resolve():
        return "cumulus"
    return str(Path(sys.argv[0]).resolve()) if Path(sys.argv[0]).name == "cumulus" else "cumulus"


def prepare(settings: Settings) -> None:
    """Check Docker and make sure the runtime image exists (built on first use)."""
    try:
        runtime = DockerRuntime(settings.docker_host)
    except ContainerRuntimeError as exc:
        raise UpError(f"{exc}\nStart a Docker engine (`make up` starts one) or set DOCKER_HOST.") from exc
    if not settings.image:
        with console.status("runtime image: importing or building it (first time ~1 min)…"):
            try:
                settings.image = ensure_runtime_image(runtime.client)
            except ImageBuildError as exc:
                raise UpError(str(exc)) from exc


async def _wait_for_node(plat: Platform, timeout_s: float) -> str | None:
    """None once a node is ready; else, after `timeout_s` or as soon as the provider keeps failing,
    what is wrong (the control plane serves on and its fleet loop keeps trying)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(n.state is NodeState.READY for n in plat.fleet.nodes.values()):
            return None
        trouble = plat.autoscaler.trouble() if plat.autoscaler is not None else None
        if trouble:
            return trouble
        await asyncio.sleep(0.1)
    return (f"no node agent became ready within {timeout_s:.0f}s; "
            f"see {plat.settings.data_dir / 'nodes'}/*/agent.log and `cumulus events`")


def _deploy_example(url: str, token_path: Path) -> str:
    client = Client(url, token_path.read_text().strip())
    try:
        result = client.get("/v1/functions/hello")  # already there from an earlier run
    except ClientError:
        result = client.deploy(zip_folder(EXAMPLE), {"name": "hello"})
    answer = client.invoke("hello", b'{"name": "Cumulus"}')
    cold = answer.headers.get("X-Cumulus-Cold-Start")
    return f"{result['url']} (version {result['version']}); first call (cold={cold}): {answer.text}"


async def run(settings: Settings, file: FileConfig, *, deploy_example: bool, keep_nodes: bool) -> None:
    """Serve until interrupted; then stop the nodes (unless `keep_nodes`)."""
    # Database calls run in threads; the default pool (cores + 4) is too small for a control plane
    # that also waits on nodes and providers.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=32,
                                                                       thread_name_prefix="cumulus"))
    try:
        plat = Platform(settings, file=file)
    except (ProviderError, SecretKeyError) as exc:
        raise UpError(str(exc)) from exc
    (settings.data_dir / "endpoint").write_text(settings.url + "\n")
    config = uvicorn.Config(build_asgi(plat), host=settings.host, port=settings.port, log_level="warning",
                            access_log=False, loop="uvloop", http="httptools", lifespan="on",
                            timeout_keep_alive=75, timeout_graceful_shutdown=10)
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                raise UpError(f"the API could not start on {settings.host}:{settings.port} "
                              "(is the port in use? try --port)")
            await asyncio.sleep(0.05)
        no_node = None
        if settings.min_nodes > 0:
            with console.status("waiting for the first node agent…"):
                no_node = await _wait_for_node(plat, 90)
        token_path = plat.admin_token_path
        console.print(f"[bold green]Cumulus is up[/] at {settings.url}  (docs: {settings.url}/docs)")
        console.print(f"  data directory: {settings.data_dir}")
        if token_path.exists():
            console.print(f"  admin token:    {token_path}")
        else:  # another control plane on this database made it (HA)
            console.print("  admin token:    the one the first control plane on this database wrote "
                          "to its data directory")
            deploy_example = False
        if no_node:
            console.print(f"[bold yellow]no node is ready yet:[/] {escape(no_node)}")
            console.print("  Cumulus serves on and keeps trying in the background (`cumulus events` "
                          "says how it goes); calls that find no node get 503 NoCapacity.")
            deploy_example = False
        if deploy_example and EXAMPLE.is_dir() and settings.min_nodes > 0:
            try:
                shown = await asyncio.to_thread(_deploy_example, settings.url, token_path)
                console.print(f"  deployed hello: {shown}")
            except ClientError as exc:
                console.print(f"[red]deploying examples/hello failed:[/] {exc}")
        cli = _cumulus_command()
        env = f"CUMULUS_DATA_DIR={shlex.quote(str(settings.data_dir))} "
        console.print("Invoke it:")
        console.print(f"  {env}{cli} invoke hello --data '{{\"name\": \"you\"}}'", markup=False)
        console.print(f"  curl -s -H \"Authorization: Bearer $(cat {token_path})\" "
                      f"-d '{{\"name\": \"you\"}}' {settings.url}/v1/functions/hello/invoke", markup=False)
        console.print("Press Ctrl-C to stop.")
        await serving
    finally:
        if not serving.done():
            server.should_exit = True
            await serving
        if not keep_nodes:
            await plat.terminate_nodes()
        console.print("Cumulus stopped.")


def up(settings: Settings, file: FileConfig | None = None, *, deploy_example: bool = True,
       keep_nodes: bool = False) -> None:
    """Entry point of `cumulus up`."""
    private_dir(settings.data_dir)
    logging.basicConfig(level=logging.INFO, filename=settings.data_dir / "control-plane.log",
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    prepare(settings)
    import uvloop

    uvloop.run(run(settings, file or FileConfig(), deploy_example=deploy_example, keep_nodes=keep_nodes))
