"""Intents: side effects on the outside world written down before they are made, closed after.

Instance intents (starts and stops asked of node agents) and provider intents (creates and
terminates asked of a `NodeProvider`); a restarted control plane replays the open ones.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlmodel import col, delete, select

from control_plane.store.cluster import Fence, check_fence
from control_plane.store.tables import InstanceIntent, ProviderIntent
from control_plane.store.unit import Repository


class IntentRepository(Repository):
    """Open, update and list intents."""

    # -- instance intents ------------------------------------------------------------------------
    def open_instance_intent(self, intent: InstanceIntent) -> None:
        """Write down a start or stop before asking the agent (a stop replaces a start). A delete
        and an insert in one transaction, not a merge: a merge reads the row, then updates it, and
        fails if the start's close deleted it in between (the start answered meanwhile)."""
        with self.session() as s:
            s.execute(delete(InstanceIntent).where(col(InstanceIntent.instance_id) == intent.instance_id))
            s.add(intent)

    def close_instance_intent(self, instance_id: str, kind: str) -> None:
        """The agent answered: the intent of this kind is done (a newer one of another kind stays)."""
        with self.session() as s:
            s.execute(delete(InstanceIntent).where(col(InstanceIntent.instance_id) == instance_id,
                                                   col(InstanceIntent.kind) == kind))

    def instance_intents(self, owner: str) -> list[InstanceIntent]:
        """The open instance intents of control plane `owner`."""
        with self.session() as s:
            return list(s.exec(select(InstanceIntent).where(InstanceIntent.owner == owner)).all())

    # -- provider intents ----------------------------------------------------------------------
    def open_intent(self, request_id: str, kind: str, provider: str, *, node_type: str = "",
                    provider_ids: Sequence[str] = (), fence: Fence | None = None) -> None:
        """Write down a provider call before making it (idempotent by request id). With a
        `fence`, only while that leader lease is still held (LeaseLost otherwise)."""
        with self.session() as s:
            if fence is not None:
                check_fence(s, fence, time.time())
            if s.get(ProviderIntent, request_id) is None:
                s.add(ProviderIntent(request_id=request_id, kind=kind, provider=provider, node_type=node_type,
                                     provider_ids=list(provider_ids)))

    def update_intent(self, request_id: str, state: str, provider_ids: Sequence[str] = (), *,
                      fence: Fence | None = None) -> None:
        """Record how a provider call went (and which machines it concerns); with a `fence`,
        only while that leader lease is still held (LeaseLost otherwise)."""
        with self.session() as s:
            if fence is not None:
                check_fence(s, fence, time.time())
            row = s.get(ProviderIntent, request_id)
            if row is not None:
                row.state = state
                if provider_ids:
                    row.provider_ids = list(provider_ids)
                row.updated_at = time.time()
                s.add(row)

    def open_intents(self, provider: str) -> list[ProviderIntent]:
        """Intents of `provider` not finished yet, oldest first."""
        with self.session() as s:
            return list(s.exec(select(ProviderIntent)
                               .where(ProviderIntent.provider == provider,
                                      col(ProviderIntent.state).in_(("open", "created")))
                               .order_by(col(ProviderIntent.created_at))).all())
