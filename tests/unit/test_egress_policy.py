"""The egress policy's pure parts: which networks, in which rules; bad operator entries refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.functions.builder import _pinned
from control_plane.functions.requirements import parse_requirements
from node_agent import egress
from node_agent.agent import is_static_executable
from node_agent.egress import EgressError, EgressPolicy


def test_rules_allow_loopback_first_and_reject_the_rest_in_order() -> None:
    policy = EgressPolicy(deny=("169.254.0.0/16", "10.1.2.3/32"), deny_tcp_ports=(8081,))
    rules = policy.iptables().splitlines()
    assert rules[:4] == ["*filter", ":CUMULUS-EGRESS - [0:0]", "-A OUTPUT -j CUMULUS-EGRESS",
                         "-A CUMULUS-EGRESS -o lo -j RETURN"]
    assert rules[4:7] == ["-A CUMULUS-EGRESS -d 169.254.0.0/16 -j REJECT --reject-with icmp-net-prohibited",
                          "-A CUMULUS-EGRESS -d 10.1.2.3/32 -j REJECT --reject-with icmp-net-prohibited",
                          "-A CUMULUS-EGRESS -p tcp --dport 8081 -j REJECT --reject-with tcp-reset"]
    assert rules[-1] == "COMMIT"
    assert "-A CUMULUS-EGRESS -j REJECT --reject-with icmp6-adm-prohibited" in EgressPolicy.ip6tables()


def test_addresses_become_host_networks_loopback_and_ipv6_dropped() -> None:
    found = egress.networks(["10.0.0.5", "127.0.0.1", "::1", "fe80::1", "junk", "10.0.0.5"])
    assert found == ("10.0.0.5/32",)


def test_the_policy_holds_metadata_the_node_its_control_planes_and_the_agent_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(egress, "host_addresses", lambda: ["127.0.0.1", "192.168.7.2"])
    policy = egress.policy_for(control_planes=["http://127.0.0.1:8080", "http://10.9.8.7:8080"],
                               agent_port=8123, extra=["172.31.0.0/16"], own_subnets=["172.20.0.0/16"])
    assert policy.deny == ("169.254.0.0/16", "192.168.7.2/32", "10.9.8.7/32", "172.20.0.0/16",
                           "172.31.0.0/16")
    assert policy.deny_tcp_ports == (8123,)


@pytest.mark.parametrize("entry", ["fd00::/8", "not a network", "10.0.0.0/33"])
def test_an_operator_entry_that_is_not_an_ipv4_network_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                                  entry: str) -> None:
    monkeypatch.setattr(egress, "host_addresses", lambda: [])
    with pytest.raises(EgressError, match="not an IPv4 network"):
        egress.policy_for(control_planes=[], agent_port=0, extra=[entry])


@pytest.mark.parametrize(("text", "pinned"), [
    ("numpy==2.1.0\n", True), ("numpy==2.1.0\npandas==2.2.3\n", True), ("numpy\n", False),
    ("numpy>=2\n", False), ("numpy==2.*\n", False), ("numpy==2.1.0\npandas\n", False),
    ("numpy==2.1.0 --hash=sha256:" + "a" * 64 + "\n", True),
])
def test_only_exact_requirements_count_as_pinned(text: str, pinned: bool) -> None:
    assert _pinned(parse_requirements(text.encode())) is pinned


def test_the_gate_must_be_a_static_executable(tmp_path: Path) -> None:
    (tmp_path / "script").write_text("#!/bin/sh\n")
    assert not is_static_executable(tmp_path / "script")
    assert not is_static_executable(tmp_path / "missing")
    if Path("/bin/busybox").exists():
        assert is_static_executable(Path("/bin/busybox"))
    assert not is_static_executable(Path("/bin/sh"))  # dash: a dynamic executable
