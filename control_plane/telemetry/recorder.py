"""Writing what was observed to the store, in batches and off every caller's path: fleet events
and invocation records, each batch in one transaction; a failed write is logged, never raised."""

from __future__ import annotations

import asyncio
import logging

from control_plane.store import FleetEvent, Store
from control_plane.telemetry.events import Event, EventLog
from control_plane.telemetry.invocations import InvocationBuffer, InvocationRecord

log = logging.getLogger("cumulus.telemetry")


class Telemetry:
    """The event log and the invocation buffer of one control plane, and their flush."""

    def __init__(self, store: Store, *, log_retention: int) -> None:
        self.store = store
        self.events = EventLog()
        self.invocations = InvocationBuffer()
        self.log_retention = log_retention

    async def flush(self) -> None:
        """Write buffered events and invocation records (a write that fails loses its batch). Rows
        are made on the writing thread: records come at the rate of invocations."""
        events = self.events.take_unsaved()
        if events:
            try:
                await asyncio.to_thread(self._write_events, events)
            except Exception as exc:  # never stop the loop for a write
                log.warning("event=event_flush_failed events=%d error=%r", len(events), exc)
        records = self.invocations.take()
        if not records:
            return
        try:
            await asyncio.to_thread(self._write_records, records)
        except Exception as exc:  # a log write must never stop the loop
            log.warning("event=log_flush_failed records=%d error=%r", len(records), exc)

    def _write_events(self, events: list[Event]) -> None:
        self.store.add_events([FleetEvent(at=e.at, kind=e.kind, reason=e.reason, node_id=e.node_id)
                               for e in events])

    def _write_records(self, records: list[InvocationRecord]) -> None:
        self.store.add_logs([r.row() for r in records], self.log_retention)
