"""Nodes as their agents last reported them, with tombstones, and the join tokens they join with."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

from sqlmodel import col, delete, select

from control_plane.core import ConflictError, Unauthorized
from control_plane.store.accounts import hash_token
from control_plane.store.tables import JoinToken, NodeCredential, NodeRecord
from control_plane.store.unit import Repository

REMOVED = "removed"
"""A node removed on purpose keeps a tombstone row, so that no control plane revives it from a
late heartbeat (HA: another control plane may still hear from it)."""


class NodeRepository(Repository):
    """Node records and join tokens."""

    def upsert_node(self, node: NodeRecord) -> None:
        """Insert or update a node's record (never reviving a removed node, nor undoing a drain
        another control plane's heartbeat did not know of)."""
        with self.session() as s:
            old = s.get(NodeRecord, node.id)
            if old is not None and old.state == REMOVED:
                return
            if old is not None and old.state == "draining" and node.state == "ready":
                node.state = old.state
            s.merge(node)

    def list_nodes(self, *, removed: bool = False) -> Sequence[NodeRecord]:
        """Every node record (the removed ones too if `removed`)."""
        with self.session() as s:
            query = select(NodeRecord).order_by(col(NodeRecord.id))
            if not removed:
                query = query.where(NodeRecord.state != REMOVED)
            return s.exec(query).all()

    def set_node_state(self, node_id: str, state: str) -> None:
        """Change one node's state (a removed node stays removed)."""
        with self.session() as s:
            node = s.get(NodeRecord, node_id)
            if node is not None and node.state != REMOVED:
                node.state = state
                s.add(node)

    def delete_node(self, node_id: str) -> None:
        """Forget a node: it leaves a tombstone, purged after a day, and loses its credential."""
        with self.session() as s:
            node = s.get(NodeRecord, node_id)
            if node is not None:
                node.state = REMOVED
                node.last_heartbeat = time.time()
                s.add(node)
            s.execute(delete(NodeCredential).where(col(NodeCredential.node_id) == node_id))
            s.execute(delete(NodeRecord).where(col(NodeRecord.state) == REMOVED,
                                               col(NodeRecord.last_heartbeat) < time.time() - 86400))

    # -- joining nodes ---------------------------------------------------------------------------
    def issue_join_token(self, request_id: str, provider: str, node_type: str, ttl_s: float) -> str:
        """A fresh join token for a provision request (replacing an unused one for the same id)."""
        token = "cmlj_" + secrets.token_urlsafe(32)
        with self.session() as s:
            old = s.exec(select(JoinToken).where(JoinToken.request_id == request_id)).first()
            if old is not None:
                if old.used_at is not None:
                    raise ConflictError(f"provision request {request_id} already joined as {old.node_id}")
                s.delete(old)
                s.flush()
            s.add(JoinToken(token_hash=hash_token(token), request_id=request_id, provider=provider,
                            node_type=node_type, expires_at=time.time() + ttl_s))
        return token

    def redeem_join_token(self, token: str, node_id: str, *, secret_hash: str, url: str) -> JoinToken:
        """Use a join token once, giving node `node_id` its credential (a node that joins again gets
        a new one); Unauthorized if the token is unknown, used or expired."""
        with self.session() as s:
            row = s.get(JoinToken, hash_token(token))
            if row is None or row.used_at is not None or row.expires_at < time.time():
                raise Unauthorized("the join token is unknown, already used or expired")
            row.used_at = time.time()
            row.node_id = node_id
            s.add(row)
            s.merge(NodeCredential(node_id=node_id, secret_hash=secret_hash, url=url))
            return row

    def joined_requests(self, node_id: str | None = None) -> dict[str, str]:
        """Node id -> the provision request it joined under, from the redeemed join tokens (one
        node's if `node_id`): the link between a node and its provider machine, kept across
        restarts and leader changes (a cloud node's id is not its provider's id)."""
        with self.session() as s:
            query = select(JoinToken).where(col(JoinToken.node_id).is_not(None))
            if node_id is not None:
                query = query.where(JoinToken.node_id == node_id)
            return {str(row.node_id): row.request_id for row in s.exec(query)}

    def node_credential(self, node_id: str) -> NodeCredential | None:
        """A joined node's credential, if it has one."""
        with self.session() as s:
            return s.get(NodeCredential, node_id)
