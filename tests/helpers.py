"""Shared test helpers: zips, a running platform, and what Docker holds."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import requests

from control_plane.core import Clock
from control_plane.fleet import AgentPackage, Fleet, qemu_software
from control_plane.functions import FunctionService
from control_plane.gateway import AgentClient, Gateway, HttpAgentClient
from control_plane.identity import SecretBox
from control_plane.platform import GatewayRecords
from control_plane.store import Store
from control_plane.telemetry import InvocationBuffer
from node_agent.image import default_cache_dir
from node_agent.runtime import LABEL_FUNCTION
from provisioners.net import free_port
from provisioners.qemu.software import GuestSoftware

REPO = Path(__file__).resolve().parent.parent
DOCKER_HOST = os.environ.get("DOCKER_HOST", "unix:///run/cumulus-docker.sock")


def unit_gateway(store: Store, fleet: Fleet, clock: Clock, data_dir: Path, *,
                 agents: AgentClient | None = None, queue_timeout_s: float = 1.0, owner: str = "") -> Gateway:
    """A gateway on a real store, as the composition root wires it (agents: HTTP unless given)."""
    return Gateway(GatewayRecords(store, unit_functions(store, data_dir)), fleet, clock,
                   agents=agents or HttpAgentClient(lambda node_id: "t"), records=InvocationBuffer(),
                   queue_timeout_s=queue_timeout_s, owner=owner)


def unit_functions(store: Store, data_dir: Path) -> FunctionService:
    """The function service on a real store, its secrets sealed with a key in `data_dir`."""
    return FunctionService(store, data_dir / "artifacts", SecretBox.load(data_dir=data_dir))


def guest_software(out_dir: Path) -> GuestSoftware:
    """What the composition root hands the qemu provider (runtime image, agent wheel built into
    `out_dir`), made as it makes it; the cache is `default_cache_dir()`."""
    return qemu_software(AgentPackage(out_dir), default_cache_dir())


def make_zip(files: dict[str, str | bytes]) -> bytes:
    """A zip holding `files` (name -> content)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


def wait_for(predicate: Any, timeout: float, interval: float = 0.1,
             what: str | Callable[[], str] = "condition") -> Any:
    """Poll `predicate` until it returns something truthy, at most `timeout` seconds.

    `what` names the condition in the failure message; a callable is asked at failure time, so it
    can describe the last state seen.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")


@dataclass
class RunningPlatform:
    """A `cumulus up` process with its URL, token and data directory."""

    url: str
    token: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        """Admin auth header."""
        return {"Authorization": f"Bearer {self.token}"}

    def deploy(self, name: str, files: dict[str, str | bytes], **config: Any) -> requests.Response:
        """Deploy `files` as function `name` (raw response)."""
        cfg = {"name": name, **config}
        return requests.post(f"{self.url}/v1/functions", headers=self.headers, timeout=300,
                             files={"code": ("code.zip", make_zip(files), "application/zip")},
                             data={"config": json.dumps(cfg)})

    def deploy_image(self, name: str, **config: Any) -> requests.Response:
        """Deploy an image function that names an image on the nodes (no upload; raw response)."""
        cfg = {"name": name, "package_type": "image", **config}
        return requests.post(f"{self.url}/v1/functions", headers=self.headers, timeout=300,
                             files={"config": (None, json.dumps(cfg))})

    def deploy_ok(self, name: str, files: dict[str, str | bytes], **config: Any) -> dict[str, Any]:
        """Deploy and assert success."""
        resp = self.deploy(name, files, **config)
        assert resp.status_code == 201, resp.text
        return resp.json()  # type: ignore[no-any-return]

    def invoke(self, name: str, event: Any = None, *, raw: bytes | None = None,
               timeout: float = 120, kind: str | None = None) -> requests.Response:
        """Invoke a function (`kind`: the invocation type, "Event" for an async call)."""
        body = raw if raw is not None else json.dumps(event).encode()
        headers = self.headers if kind is None else {**self.headers, "X-Cumulus-Invocation-Type": kind}
        return requests.post(f"{self.url}/v1/functions/{name}/invoke", data=body, headers=headers,
                             timeout=timeout)

    def get(self, path: str) -> Any:
        """GET JSON, asserting 200."""
        resp = requests.get(self.url + path, headers=self.headers, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def cli(self, *args: str, input: bytes | None = None,
            flags: bool = False) -> subprocess.CompletedProcess[str]:
        """Run the `cumulus` CLI against this platform: told where by CUMULUS_URL and CUMULUS_TOKEN,
        or with `flags` by --url and --token (and no such variables)."""
        env = {**os.environ, "CUMULUS_URL": self.url, "CUMULUS_TOKEN": self.token, "COLUMNS": "200"}
        if flags:
            env = {k: v for k, v in env.items() if k not in ("CUMULUS_URL", "CUMULUS_TOKEN")}
            args = ("--url", self.url, "--token", self.token, *args)
        return subprocess.run([sys.executable, "-m", "control_plane.cli", *args], env=env,
                              capture_output=True, text=input is None, input=input, timeout=300,
                              check=False, cwd=REPO)

    def stop(self) -> None:
        """SIGINT, as Ctrl-C would."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_platform(data_dir: Path, *, extra_env: dict[str, str] | None = None,
                   args: tuple[str, ...] = (), wait_for_node: bool = True,
                   port: int | None = None, token: str | None = None) -> RunningPlatform:
    """Start `cumulus up` (on a free port unless given) with fast loops, and wait until it is up
    (and, unless told otherwise, until a node is ready). `token`: the admin token, when another
    control plane on the same database made it (HA)."""
    port = port or free_port()
    env = {**os.environ, "DOCKER_HOST": DOCKER_HOST, "CUMULUS_RECONCILE_INTERVAL_S": "0.2",
           "CUMULUS_QUEUE_TIMEOUT_S": "10", "CUMULUS_ASYNC_RETRY_BASE_S": "0.5",
           "CUMULUS_HEARTBEAT_INTERVAL_S": "0.5", "PIP_NO_INDEX": "1", **(extra_env or {})}
    log = (data_dir / "up.out").open("wb") if data_dir.exists() else None
    data_dir.mkdir(parents=True, exist_ok=True)
    log = log or (data_dir / "up.out").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "control_plane.cli", "up", "--data-dir", str(data_dir),
                             "--port", str(port), "--no-example", *args],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError("cumulus up exited:\n" + (data_dir / "up.out").read_text())
        if wait_for_node:
            return "Press Ctrl-C" in (data_dir / "up.out").read_text()
        # Up as soon as the API answers (a node may still be coming, or be the test's to start).
        try:
            return requests.get(f"{url}/healthz", timeout=2).status_code == 200 and \
                (token is not None or (data_dir / "admin.token").exists())
        except requests.RequestException:
            return False

    wait_for(ready, 120, what="cumulus up")
    token = token or (data_dir / "admin.token").read_text().strip()
    return RunningPlatform(url, token, data_dir, proc, env)


def docker_client() -> docker.DockerClient:
    """A Docker client on the engine the tests use."""
    return docker.DockerClient(base_url=DOCKER_HOST)


def containers_of(function: str) -> list[dict[str, Any]]:
    """Containers (any state) labelled with this function, as the engine summarises them
    (keys "State", "Labels", ...; no per-container inspect, which races with removal)."""
    summaries = docker_client().api.containers(all=True, filters={"label": f"{LABEL_FUNCTION}={function}"})
    return list(summaries)


def container_that_ran(function: str, hostname: str) -> str:
    """The id of the function's container whose hostname (Docker's default: the id's first 12
    characters) a call returned: the one that served it, whatever other instance also stands."""
    found = containers_of(function)
    ids = [c["Id"] for c in found if c["Id"].startswith(hostname)]
    assert len(ids) == 1, (hostname, [(c["Id"][:12], c["State"], c["Status"],
                                       c["Labels"].get("io.cumulus.instance")) for c in found])
    return str(ids[0])


def run_shim(tmp: Path, code: str, env: dict[str, str] | None = None) -> Iterator[Path]:
    """The real runtime shim as a process on this host, as a function container runs it (its own
    folder holding `cumulus_wire.py`, nothing else of Cumulus importable), serving `code` as
    main.py: yields its socket once it listens, kills it after."""
    from node_agent.agent import SHIM_DIR

    shim = tmp / "opt-cumulus"
    shutil.copytree(SHIM_DIR, shim, ignore=shutil.ignore_patterns("__pycache__"))  # as mounted
    task = tmp / "task"
    task.mkdir()
    (task / "main.py").write_text(code)
    sock = tmp / "fn.sock"
    full = {"CUMULUS_SOCKET": str(sock), "CUMULUS_HANDLER": "main.handler", "PYTHONPATH": str(task),
            "PATH": "/usr/bin:/bin", **(env or {})}
    # -S as in a container; no -I, so PYTHONPATH can stand in for the /var/task mount
    proc = subprocess.Popen([sys.executable, "-S", str(shim / "cumulus_runtime.py")], env=full, cwd=tmp,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "the shim never opened its socket"
            time.sleep(0.01)
        yield sock
    finally:
        proc.kill()
        proc.wait(10)
