"""Calls this control plane answered whose usage its node has not yet been seen to deliver.

A node meters the calls it runs and keeps its records until a control plane stored them
(`node_agent.meter`), so a control plane that dies loses none. A node that vanishes (its machine
killed) takes with it the records it had not sent yet, the last quarter second or so of calls. For
those, the control plane that answered a call is the other witness: it notes each answered call
here, drops the note once the node's own record is stored here, and when it forgets a node (lost,
gone or removed) hands over the notes of that node's calls to be stored as their usage (ignored
where the node's own record made it after all: both are keyed by request id). Such a record has
the duration the runtime reported and no init time (only the node measured that: a vanished
node's start-ups are the platform's cost).

Bounded: notes older than `keep_s` (longer than a node takes to be declared lost) are dropped, and
at most `max_entries` are kept. On the event loop thread only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, NamedTuple

from control_plane.core import Clock

MAX_ENTRIES = 100_000


class Answered(NamedTuple):
    """One answered call, as the control plane saw it."""

    at: float  # on the control plane's clock, for pruning
    node_id: str
    instance_id: str
    function: str
    version: int
    memory_mib: int
    started_at: float  # wall clock
    duration_us: int
    outcome: str


class AnsweredCalls:
    """The notes, by request id, oldest first."""

    def __init__(self, clock: Clock, keep_s: float, max_entries: int = MAX_ENTRIES) -> None:
        self.clock = clock
        self.keep_s = keep_s
        self.max_entries = max_entries
        self.notes: OrderedDict[str, Answered] = OrderedDict()

    def add(self, request_id: str, note: Answered) -> None:
        """A call was answered."""
        self.notes[request_id] = note
        horizon = note.at - self.keep_s
        while self.notes:
            first = next(iter(self.notes.values()))
            if first.at >= horizon and len(self.notes) <= self.max_entries:
                break
            self.notes.popitem(last=False)

    def stored(self, node_id: str, request_ids: Iterable[str]) -> None:
        """`node_id` delivered its own records of these calls (of its calls only: a node cannot
        settle another's)."""
        for rid in request_ids:
            note = self.notes.get(rid)
            if note is not None and note.node_id == node_id:
                del self.notes[rid]

    def take_node(self, node_id: str) -> list[dict[str, Any]]:
        """The notes of a node's calls, as usage records (`node_agent.protocol.UsageRecord` shape),
        and forget them."""
        mine = [(rid, n) for rid, n in self.notes.items() if n.node_id == node_id]
        for rid, _ in mine:
            del self.notes[rid]
        return [{"seq": 0, "kind": "invocation", "request_id": rid, "instance_id": n.instance_id,
                 "function": n.function, "version": n.version, "memory_mib": n.memory_mib,
                 "started_at": n.started_at, "duration_us": n.duration_us, "init_ms": 0.0,
                 "outcome": n.outcome} for rid, n in mine]
