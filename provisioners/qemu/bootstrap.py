"""Installing and starting the node agent in a booted VM, over SSH (paramiko, `provisioners.ssh`).

The image already holds Debian, Docker, the agent's dependencies in `/opt/cumulus` and the agent's
systemd unit; what a node still needs is the agent's own code (the wheel this control plane serves
every node, built from the code it runs, so host and node never disagree) and its config. SFTP
uploads and one script do both, then the host waits until the agent answers `GET /healthz` through
the forwarded port.
"""

from __future__ import annotations

import json
import logging
import shlex
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioners import ssh
from provisioners.base import NodeBootstrap, NodeType, ProviderError
from provisioners.qemu import rootfs
from provisioners.qemu.image import VmImage

log = logging.getLogger("cumulus.qemu")

GUEST_HOST_ADDRESS = "10.0.2.2"  # the host, as QEMU's user-mode network shows it to the guest
SITE_PACKAGES = f"{rootfs.AGENT_VENV}/lib/python3.11/site-packages"


@dataclass(frozen=True)
class AgentPlan:
    """What to install in one VM: how the agent is configured and reached."""

    config: Mapping[str, Any]
    env: Mapping[str, str]
    agent_url: str  # from the host, through the forwarded port
    agent_wheel: Path  # the Cumulus wheel to install (its dependencies are in the image)


def guest_reachable(url: str) -> str:
    """`url` with a loopback host replaced by the host's address inside QEMU (10.0.2.2)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if host in ("localhost", "::1") or host.startswith("127."):
        netloc = GUEST_HOST_ADDRESS + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def plan_agent(bootstrap: NodeBootstrap, *, node_id: str, node_type: NodeType, agent_host_port: int,
               runtime_image: str, agent_wheel: Path) -> AgentPlan:
    """The agent's config for `bootstrap` on VM `node_id` (fields of `AgentSettings`).

    The agent listens on every guest address; the control plane reaches it at the host side of the
    forwarded port, and the agent reaches the control plane through 10.0.2.2.
    """
    agent_url = f"http://127.0.0.1:{agent_host_port}"
    config: dict[str, Any] = {
        "control_plane_url": guest_reachable(bootstrap.control_plane_url),
        "join_token": bootstrap.join_token,
        "provider_node_id": node_id,
        "listen_host": "0.0.0.0",
        "listen_port": bootstrap.agent_port,
        "advertise_url": agent_url,
        "data_dir": "/var/lib/cumulus-agent",
        "cpu_millis": node_type.capacity.cpu_millis,
        "memory_mib": node_type.capacity.memory_mib,
        "image": bootstrap.runtime_image or runtime_image,
        "provider": "qemu",
        "node_type": node_type.name,
    }
    return AgentPlan(config=config, env=dict(bootstrap.extra_env), agent_url=agent_url,
                     agent_wheel=agent_wheel)


def _env_file(env: Mapping[str, str]) -> str:
    lines = []
    for name, value in sorted(env.items()):
        if not name.replace("_", "").isalnum() or "\n" in value:
            raise ProviderError(f"invalid agent environment variable {name!r}")
        lines.append(f'{name}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"')
    return "".join(line + "\n" for line in lines)


def install_agent(client: Any, plan: AgentPlan, *, timeout_s: float) -> None:
    """Upload the agent and its config, then (re)start its service; idempotent."""
    remote = f"/root/{plan.agent_wheel.name}"
    ssh.put_bytes(client, plan.agent_wheel.read_bytes(), remote)
    # A pure-Python wheel is its files: unpacked into site-packages (dist-info included) it is
    # installed, and its dependencies are already in the image's venv. pip would cost ~5 s more per
    # node under emulation, for entry points the agent does not use.
    install = (f"{rootfs.AGENT_VENV}/bin/python -I -m zipfile -e {shlex.quote(remote)} {SITE_PACKAGES} "
               f"&& rm -f {shlex.quote(remote)}")
    ssh.put_bytes(client, json.dumps(dict(plan.config), indent=2).encode(), rootfs.AGENT_CONFIG)
    ssh.put_bytes(client, _env_file(plan.env).encode(), rootfs.AGENT_ENV)
    # Not `enable`d: a guest reboot ends its QEMU (-no-reboot), so the unit never needs a boot link.
    script = f"set -e\n{install}\nsystemctl restart {rootfs.AGENT_UNIT}\n"
    result = ssh.run(client, "bash -s", stdin=script.encode(), timeout_s=timeout_s)
    if result.exit_status != 0:
        tail = "\n".join(result.output.splitlines()[-20:])
        raise ssh.SshError(f"agent install exited with {result.exit_status}:\n{tail}")


def wait_healthy(agent_url: str, *, timeout_s: float, give_up: Callable[[], None] = lambda: None) -> float:
    """Poll `GET {agent_url}/healthz` until it answers 200; returns the seconds waited.

    `give_up` is called between polls and may raise to stop waiting (the VM is gone)."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    problem = ""
    while time.monotonic() < deadline:
        give_up()
        try:
            with urllib.request.urlopen(f"{agent_url}/healthz", timeout=5) as resp:
                if resp.status == 200:
                    return time.monotonic() - t0
                problem = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            problem = str(exc)
        time.sleep(0.5)
    raise ProviderError(f"the agent at {agent_url} was not healthy within {timeout_s:.0f}s: {problem}")


def wait_ssh_banner(port: int, *, timeout_s: float, give_up: Callable[[], None] = lambda: None) -> None:
    """Wait until the guest's sshd sends its `SSH-2.0-...` banner through the forwarded port.

    QEMU's user-mode network accepts a forwarded connection before the guest listens (and then
    closes it), so a TCP connect proves nothing; reading the banner costs far less than a full
    paramiko attempt and logs nothing. `give_up` may raise between attempts (the VM is gone).
    """
    deadline = time.monotonic() + timeout_s
    problem = "no answer"
    while time.monotonic() < deadline:
        give_up()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                # Generous: before sshd listens QEMU closes at once; once it does, a loaded emulated
                # guest may take seconds to answer, and an attempt cut short only adds to its load.
                sock.settimeout(60)
                if sock.recv(64).startswith(b"SSH-"):
                    return
                problem = "connection closed before the SSH banner"
        except OSError as exc:
            problem = str(exc) or type(exc).__name__
        time.sleep(0.5)
    raise ProviderError(f"no SSH banner on 127.0.0.1:{port} within {timeout_s:.0f}s: {problem}")


def ssh_settings(image: VmImage, known_hosts: Path, *, ready_timeout_s: float) -> ssh.SshSettings:
    """Root over the image's key; the guest's host key is pinned through `known_hosts`."""
    return ssh.SshSettings(username="root", key_filename=str(image.ssh_key.private_path),
                           known_hosts=str(known_hosts), sudo=False, connect_timeout_s=10.0,
                           ready_timeout_s=ready_timeout_s, command_timeout_s=600.0)


def write_known_hosts(path: Path, image: VmImage, ssh_port: int) -> None:
    """Pin the image's host key for `[127.0.0.1]:ssh_port`."""
    path.write_text(f"[127.0.0.1]:{ssh_port} {image.host_key}\n")
