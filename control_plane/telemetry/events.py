"""Scaling and fleet events: what was decided, when, and why. Kept in memory for the API and
written to the store in batches by the reconciler (never on the caller's path)."""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

log = logging.getLogger("cumulus.events")


@dataclass(frozen=True, slots=True)
class Event:
    """One decision or observation about the fleet."""

    at: float
    kind: str
    reason: str
    node_id: str = ""


class EventLog:
    """A bounded in-memory log plus a buffer of events not yet stored."""

    def __init__(self, keep: int = 1000) -> None:
        self.recent: deque[Event] = deque(maxlen=keep)
        self.unsaved: list[Event] = []

    def record(self, kind: str, reason: str, *, node_id: str = "") -> Event:
        """Record an event (wall-clock time) and log it."""
        event = Event(time.time(), kind, reason, node_id)
        self.recent.append(event)
        self.unsaved.append(event)
        log.info("event=%s node=%s reason=%r", kind, node_id, reason)
        return event

    def take_unsaved(self) -> list[Event]:
        """Events to write to the store (and forget as unsaved)."""
        batch, self.unsaved = self.unsaved, []
        return batch
