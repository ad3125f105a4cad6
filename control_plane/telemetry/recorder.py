"""Writing what was observed to the store, in batches and off every caller's path: fleet events
and invocation records, each batch in one transaction; a failed write is logged, never raised."""

from __future__ import annotations

import asyncio
import logging

from control_plane.store import FleetEvent, Store
from control_plane.telemetry.events import EventLog
from control_plane.telemetry.invocations import InvocationBuffer

log = logging.getLogger("cumulus.telemetry")


class Telemetry:
    """The event log and the invocation buffer of one control plane, and their flush."""

    def __init__(self, store: Store, *, log_retention: int) -> None:
        self.store = store
        self.events = EventLog()
        self.invocations = InvocationBuffer()
        self.log_retention = log_retention

    async def flush(self) -> None:
        """Write buffered events and invocation records (a write that fails loses its batch)."""
        events = self.events.take_unsaved()
        if events:
            rows = [FleetEvent(at=e.at, kind=e.kind, reason=e.reason, node_id=e.node_id) for e in events]
            try:
                await asyncio.to_thread(self.store.add_events, rows)
            except Exception as exc:  # never stop the loop for a write
                log.warning("event=event_flush_failed events=%d error=%r", len(events), exc)
        records = self.invocations.take()
        if not records:
            return
        try:
            await asyncio.to_thread(self.store.add_logs, [r.row() for r in records], self.log_retention)
        except Exception as exc:  # a log write must never stop the loop
            log.warning("event=log_flush_failed records=%d error=%r", len(records), exc)
