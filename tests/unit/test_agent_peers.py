"""How a node agent reaches the control planes it learns of from heartbeat answers (HA)."""

from __future__ import annotations

import pytest

from node_agent.server import reachable


@pytest.mark.parametrize(("peer", "configured", "expected"), [
    # side by side on the host, seen from a QEMU guest: the host's address, the peer's port
    ("http://127.0.0.1:8081", "http://10.0.2.2:8080", "http://10.0.2.2:8081"),
    ("http://localhost:8081/", "http://10.0.2.2:8080", "http://10.0.2.2:8081"),
    # a local agent: loopback is right as it is
    ("http://127.0.0.1:8081", "http://127.0.0.1:8080", "http://127.0.0.1:8081"),
    # control planes with real addresses are used as advertised
    ("https://cp-2.example.net:8443", "http://10.0.2.2:8080", "https://cp-2.example.net:8443"),
])
def test_loopback_peers_are_reached_like_the_configured_control_plane(peer: str, configured: str,
                                                                      expected: str) -> None:
    assert reachable(peer, configured) == expected
