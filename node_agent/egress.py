"""A function's outbound network ("egress"), enforced by the node, never left to the function.

A function with `network: egress` runs on a Docker bridge network of the node (outbound through
the node's NAT, nothing published, so nothing inbound), and before its code runs the node writes
packet filter rules into the container's *own* network namespace (`iptables-restore` through
`nsenter`, as root). The container has no capabilities, so it cannot change them. What they refuse:

- the link-local range 169.254.0.0/16 (the cloud metadata address 169.254.169.254 among them);
- every address of this node (so the node agent, and a control plane on this machine, whatever
  address they listen on) and the addresses of the control planes the agent reports to;
- TCP to the node agent's port at any address (the agents of other nodes);
- the operator's own list (`egress_deny`);
- all of IPv6 but loopback (the egress network is IPv4 only).

Loopback stays open (Docker's embedded DNS answers there). The function's code waits for a gate
file that the node writes once the rules are in (see `cumulus_runtime.py`), so no call of the
function ever runs before them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import subprocess
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("cumulus.egress")

METADATA_RANGE = "169.254.0.0/16"
CHAIN = "CUMULUS-EGRESS"


class EgressError(Exception):
    """The node could not set a function's network up as its policy requires."""


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """What a function with egress may not reach (IPv4 networks, and TCP ports at any address)."""

    deny: tuple[str, ...] = (METADATA_RANGE,)
    deny_tcp_ports: tuple[int, ...] = ()

    def iptables(self) -> str:
        """The IPv4 rules, as `iptables-restore --noflush` input for the container's namespace."""
        lines = ["*filter", f":{CHAIN} - [0:0]", f"-A OUTPUT -j {CHAIN}", f"-A {CHAIN} -o lo -j RETURN"]
        for net in self.deny:
            lines.append(f"-A {CHAIN} -d {net} -j REJECT --reject-with icmp-net-prohibited")
        for port in self.deny_tcp_ports:
            lines.append(f"-A {CHAIN} -p tcp --dport {port} -j REJECT --reject-with tcp-reset")
        return "\n".join([*lines, "COMMIT", ""])

    @staticmethod
    def ip6tables() -> str:
        """The IPv6 rules: nothing leaves but loopback."""
        return "\n".join(["*filter", f":{CHAIN} - [0:0]", f"-A OUTPUT -j {CHAIN}",
                          f"-A {CHAIN} -o lo -j RETURN",
                          f"-A {CHAIN} -j REJECT --reject-with icmp6-adm-prohibited", "COMMIT", ""])


def networks(addresses: Iterable[str]) -> tuple[str, ...]:
    """Each IPv4 address as a /32 network (others dropped), in order, once."""
    out: dict[str, None] = {}
    for addr in addresses:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            continue
        if ip.version == 4 and not ip.is_loopback:
            out[f"{ip}/32"] = None
    return tuple(out)


def host_addresses() -> list[str]:
    """This node's IPv4 addresses, on every interface (`ip -j addr`)."""
    try:
        proc = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True,
                              timeout=10, check=True)
        data: list[dict[str, Any]] = json.loads(proc.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise EgressError(f"cannot list this node's addresses: {exc}") from exc
    return [str(a["local"]) for iface in data for a in iface.get("addr_info", []) if a.get("local")]


def url_addresses(urls: Sequence[str]) -> list[str]:
    """The IPv4 addresses the hosts of `urls` resolve to (unresolvable ones are skipped)."""
    out: list[str] = []
    for url in urls:
        host = urllib.parse.urlsplit(url).hostname
        if not host:
            continue
        try:
            infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            log.warning("event=egress_unresolved host=%s", host)
            continue
        out += [str(info[4][0]) for info in infos]
    return out


def policy_for(*, control_planes: Sequence[str], agent_port: int, extra: Sequence[str] = (),
               own_subnets: Sequence[str] = ()) -> EgressPolicy:
    """The node's policy: metadata, its own addresses, its control planes, its agent port, the
    subnets of the egress network it made (functions never reach each other), and `extra`."""
    deny = [METADATA_RANGE, *networks(host_addresses()), *networks(url_addresses(control_planes))]
    for net in [*own_subnets, *extra]:
        try:
            parsed = ipaddress.ip_network(net, strict=False)
        except ValueError as exc:
            raise EgressError(f"egress_deny holds {net!r}, which is not an IPv4 network: {exc}") from exc
        if parsed.version != 4:
            raise EgressError(f"egress_deny holds {net!r}, which is not an IPv4 network")
        deny.append(str(parsed))
    return EgressPolicy(deny=tuple(dict.fromkeys(deny)), deny_tcp_ports=(agent_port,) if agent_port else ())


def apply(pid: int, policy: EgressPolicy) -> None:
    """Write `policy` into the network namespace of process `pid` (a container's)."""
    for tool, rules in (("iptables-restore", policy.iptables()), ("ip6tables-restore", policy.ip6tables())):
        try:
            proc = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", tool, "--noflush"], input=rules,
                                  capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise EgressError(f"{tool} in the container's network namespace: {exc}") from exc
        if proc.returncode != 0:
            raise EgressError(f"{tool} in the container's network namespace failed: "
                              f"{proc.stderr.strip()[:500]}")


def ensure_network(client: Any, name: str) -> tuple[str, list[str]]:
    """The node's egress bridge `name`, made if missing: its id, and the subnets functions may not
    reach. Containers on it cannot reach each other (inter-container traffic off, and its subnets
    are in every policy) and it publishes nothing. A network the operator made is used as is (and
    no subnets returned: its subnet may hold the operator's own services).

    The engine lets several networks share a name (its duplicate check is best effort), and then
    refuses the name as ambiguous: agents that made it at once would all fail from then on. So the
    network used is the oldest of that name (every agent on the engine picks the same one), found
    by id, and the other egress networks of that name that nothing uses are removed."""
    import docker.errors

    try:
        found = _named(client, name)
        if not found:
            try:
                client.networks.create(name, driver="bridge", check_duplicate=True,
                                       options={"com.docker.network.bridge.enable_icc": "false"},
                                       labels={"io.cumulus.role": "egress"})
                log.info("event=egress_network_created name=%s", name)
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # made meanwhile by another agent on this engine
                    raise EgressError(f"cannot create the egress network {name}: {exc}") from exc
            found = _named(client, name)
        if not found:
            raise EgressError(f"the egress network {name} was made and is gone")
        network, *extra = sorted(found, key=lambda n: (str(n.attrs.get("Created", "")), n.id))
        for other in extra:
            if _ours(other) and not (other.attrs.get("Containers") or {}):
                with contextlib.suppress(docker.errors.APIError):
                    other.remove()
                    log.info("event=egress_network_duplicate_removed name=%s id=%s", name, other.id)
    except docker.errors.DockerException as exc:
        raise EgressError(f"the egress network {name}: {exc}") from exc
    if not _ours(network):
        return str(network.id), []
    configs = (network.attrs.get("IPAM") or {}).get("Config") or []
    return str(network.id), [str(c["Subnet"]) for c in configs
                             if c.get("Subnet") and ":" not in str(c["Subnet"])]


def _named(client: Any, name: str) -> list[Any]:
    """The networks called exactly `name` (the engine's name filter matches parts of names)."""
    import docker.errors

    found = []
    for listed in client.networks.list(names=[name]):
        if listed.name == name:
            with contextlib.suppress(docker.errors.NotFound):  # another agent removed a duplicate
                found.append(client.networks.get(listed.id))
    return found


def _ours(network: Any) -> bool:
    return (network.attrs.get("Labels") or {}).get("io.cumulus.role") == "egress"
