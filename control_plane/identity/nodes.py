"""Each node's identity. A node joins once with a single-use join token and gets:

- a node secret (only its hash is stored), with which its agent calls the control planes: the
  credential `<node id>:<secret>` authorizes heartbeats for that node id only, from the URL it
  joined with;
- an agent key, `HMAC(cluster seed, node id)`, which control planes present when they call that
  agent (recomputed, never stored; one node's key opens no other node).

Instance ids are minted for one node with a MAC of the same seed: a node cannot report an instance
no control plane placed on it, nor another node's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from control_plane.core import id_prefix

NODE_KEY_SEED = "node_key_seed"  # the cluster secret the keys derive from (sealed in the database)
MAC_DIGITS = 8


def new_node_secret() -> str:
    """A fresh node secret."""
    return "cmln_" + secrets.token_urlsafe(32)


def credential(node_id: str, secret: str) -> str:
    """What an agent presents to control planes: `<node id>:<node secret>`."""
    return f"{node_id}:{secret}"


@dataclass(frozen=True)
class NodeKeys:
    """Keys derived from the cluster's seed."""

    seed: bytes

    def _mac(self, *parts: str) -> str:
        return hmac.new(self.seed, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()

    def agent_key(self, node_id: str) -> str:
        """What a control plane presents to the agent of `node_id`."""
        return "cmla_" + self._mac("agent", node_id)[:48]

    def instance_id(self, function: str, node_id: str) -> str:
        """A new instance id for `function` on `node_id`: `<id_prefix(function)>-<random><mac>`."""
        nonce = secrets.token_hex(6)
        prefix = id_prefix(function)
        return f"{prefix}-{nonce}{self._mac('instance', node_id, prefix, nonce)[:MAC_DIGITS]}"

    def placed_on(self, instance_id: str, node_id: str) -> bool:
        """Whether `instance_id` was minted for `node_id` by a control plane of this cluster."""
        function, _, tail = instance_id.rpartition("-")
        if len(tail) != 12 + MAC_DIGITS or not function:
            return False
        nonce, mac = tail[:12], tail[12:]
        return hmac.compare_digest(mac, self._mac("instance", node_id, function, nonce)[:MAC_DIGITS])
