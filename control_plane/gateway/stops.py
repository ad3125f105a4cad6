"""Where each instance stop stands, so that a heartbeat never brings a stopped instance back.

A stop goes through up to three states, keyed by instance id:
- **in flight**: the agent is being asked to remove the container. A second stop of the same
  instance meanwhile is a no-op.
- **unconfirmed**: the agent was asked but did not confirm (unreachable, 5xx, or the intent could
  not be written). The instance is never adopted again; when its node reports it, it is stopped
  again. Forgotten when its node is gone.
- **recent**: confirmed a moment ago. A heartbeat the agent sent before the stop may still list
  the instance; for `recent_s` such a report is ignored.

One object per gateway; all methods run on the event loop thread (no locking).
"""

from __future__ import annotations

from control_plane.core import Clock
from control_plane.gateway.pools import Instance

RECENTLY_STOPPED_S = 30.0  # well over a heartbeat's round trip


class StopTracker:
    """The stops a control plane has asked for and how each one ended."""

    def __init__(self, clock: Clock, recent_s: float = RECENTLY_STOPPED_S) -> None:
        self.clock = clock
        self.recent_s = recent_s
        self._in_flight: set[str] = set()
        self._unconfirmed: dict[str, Instance] = {}
        self._recent: dict[str, float] = {}  # instance id -> clock time of the confirmation

    def begin(self, inst: Instance) -> bool:
        """A stop of `inst` starts; False if one is already in flight (do not ask twice)."""
        if inst.id in self._in_flight:
            return False
        self._in_flight.add(inst.id)
        self._unconfirmed[inst.id] = inst  # until the agent says otherwise
        return True

    def failed(self, instance_id: str) -> None:
        """The agent did not confirm: the stop stays unconfirmed, to be made again."""
        self._in_flight.discard(instance_id)

    def confirmed(self, instance_id: str) -> None:
        """The agent removed the container."""
        self._in_flight.discard(instance_id)
        self._unconfirmed.pop(instance_id, None)
        now = self.clock.now()
        self._recent[instance_id] = now
        for old in [i for i, at in self._recent.items() if now - at > self.recent_s]:
            del self._recent[old]

    def settling(self, instance_id: str) -> bool:
        """Whether a report of this instance is to be ignored: its stop is in flight or was just
        confirmed."""
        if instance_id in self._in_flight:
            return True
        at = self._recent.get(instance_id)
        return at is not None and self.clock.now() - at <= self.recent_s

    def unconfirmed(self, instance_id: str) -> Instance | None:
        """The instance, if its stop was asked for and never confirmed."""
        return self._unconfirmed.get(instance_id)

    def forget_node(self, node_id: str) -> list[str]:
        """The node is gone: its unconfirmed stops can never be confirmed. Returns their ids."""
        gone = [i for i, inst in self._unconfirmed.items() if inst.node_id == node_id]
        for instance_id in gone:
            del self._unconfirmed[instance_id]
        return gone
