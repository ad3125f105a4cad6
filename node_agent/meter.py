"""The node's usage meter: one record per invocation an instance ran, one per instance once it stopped.

The node is where usage happens, so it is measured here, and kept here until a control plane has
stored it: every record gets a sequence number and goes into an append-only journal on the node's
disk (written and fsync'ed in batches by the sending loop, never on a call's path), and `send_usage`
posts the oldest unacknowledged ones to a control plane, which stores them idempotently (by request
id, by instance id) and answers once they are committed. Only then are they dropped. A control plane
killed at any point thus loses nothing (the node sends the same records again, to it or to another)
and counts nothing twice (a record already stored is ignored); an agent restarted reads its journal back.

Bounded: at most `max_pending` records wait for a control plane (older ones are dropped, loudly: a
node cut off from every control plane for that long gets no calls anyway, since calls come through
control planes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("cumulus.agent.meter")

MAX_PENDING = 200_000
BATCH = 2_000  # records per request to a control plane
COMPACT_AFTER = 50_000  # acknowledged lines in the journal before it is rewritten


class UsageMeter:
    """Records usage, journals it, and hands out batches until a control plane acknowledges them."""

    def __init__(self, path: Path, *, wall: Callable[[], float] = time.time,
                 max_pending: int = MAX_PENDING, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled  # off: nothing new is recorded (what the journal holds is still sent)
        self.wall = wall
        self.max_pending = max_pending
        self.pending: OrderedDict[int, tuple[dict[str, Any], str]] = OrderedDict()  # seq: (record, line)
        self.dropped = 0
        self._seq = 0
        self._unwritten: list[str] = []
        self._acked_lines = 0
        self._acked = 0  # the highest sequence number a control plane stored
        self._ack_event = asyncio.Event()  # set (and replaced) at each acknowledgement
        self.kick = asyncio.Event()  # set: the sending loop posts at once, not at its next tick
        self.sending = False  # a sending loop runs (`send_usage`)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._load()

    # -- recording (the call's path: an append to a list) ----------------------------------------
    def invocation(self, *, request_id: str, function: str, version: int, instance_id: str, memory_mib: int,
                   started_at: float, duration_us: int, init_ms: float, outcome: str) -> None:
        """An invocation an instance ran (whatever its outcome)."""
        self._add({"kind": "invocation", "request_id": request_id, "function": function, "version": version,
                   "instance_id": instance_id, "memory_mib": memory_mib, "started_at": started_at,
                   "duration_us": max(0, duration_us), "init_ms": round(max(0.0, init_ms), 3),
                   "outcome": outcome})

    def instance(self, *, instance_id: str, function: str, version: int, memory_mib: int,
                 started_at: float, ended_at: float, busy_ms: float, init_ms: float) -> int:
        """An instance that stopped: its lifetime, and how much of it no call was running. Its
        sequence number (0 when metering is off), for `wait_stored`."""
        return self._add({"kind": "instance", "instance_id": instance_id, "function": function,
                          "version": version, "memory_mib": memory_mib, "started_at": started_at,
                          "ended_at": max(ended_at, started_at), "busy_ms": round(max(0.0, busy_ms), 3),
                          "init_ms": round(max(0.0, init_ms), 3)})

    def _add(self, record: dict[str, Any]) -> int:
        if not self.enabled:
            return 0
        self._seq += 1
        record["seq"] = self._seq
        line = json.dumps(record, separators=(",", ":"))
        self.pending[self._seq] = (record, line)
        self._unwritten.append(line)
        while len(self.pending) > self.max_pending:
            _, (lost, _) = self.pending.popitem(last=False)
            self.dropped += 1
            self._acked_lines += 1  # its journal line is as dead as an acknowledged one
            if self.dropped in (1, 100) or self.dropped % 10_000 == 0:
                log.error("event=usage_dropped dropped=%d kind=%s (no control plane stored usage for "
                          "%d records)", self.dropped, lost["kind"], self.max_pending)
        return self._seq

    # -- the journal -------------------------------------------------------------------------------
    def _load(self) -> None:
        """Read back what an earlier run of this agent recorded and no control plane acknowledged."""
        if not self.path.exists():
            return
        acked = 0
        found: dict[int, tuple[dict[str, Any], str]] = {}
        with self.path.open("rb") as fh:
            for raw in fh:
                try:
                    line = json.loads(raw)
                except ValueError:  # a line torn by a crash mid-write: the rest is still good
                    continue
                if not isinstance(line, dict):
                    continue
                if "ack" in line:
                    acked = max(acked, int(line["ack"]))
                elif isinstance(line.get("seq"), int):
                    found[line["seq"]] = (line, raw.decode().strip())
        self.pending = OrderedDict(sorted((s, r) for s, r in found.items() if s > acked))
        lost = 0
        while len(self.pending) > self.max_pending:  # the bound holds across restarts too
            self.pending.popitem(last=False)
            lost += 1
        if lost:
            self.dropped += lost
            log.error("event=usage_dropped dropped=%d at=load (no control plane stored usage for %d "
                      "records)", lost, self.max_pending)
        self._seq = max([acked, *found])
        # Rewritten whole: no torn last line for the next append to run into, and no dead lines.
        self._write(([line for _, line in self.pending.values()], True))
        if self.pending:
            log.info("event=usage_recovered records=%d", len(self.pending))

    def _take(self) -> tuple[list[str], bool]:
        """What the journal needs now (on the event loop, cheap): lines to append, or (when it
        holds many acknowledged ones) the whole new journal."""
        if self._acked_lines >= COMPACT_AFTER or (self._acked_lines and not self.pending) or \
                not self.path.exists():
            self._acked_lines = 0
            self._unwritten = []
            return [line for _, line in self.pending.values()], True
        lines, self._unwritten = self._unwritten, []
        return lines, False

    def _write(self, todo: tuple[list[str], bool]) -> None:
        """Append to, or rewrite, the journal (on a thread: it fsyncs)."""
        lines, rewrite = todo
        if not lines and not rewrite:
            return
        target = self.path.with_suffix(".tmp") if rewrite else self.path
        with target.open("w" if rewrite else "a") as fh:
            if lines:
                fh.write("\n".join(lines) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if rewrite:
            os.replace(target, self.path)

    async def flush(self) -> None:
        """Bring the journal up to date with what was recorded and acknowledged."""
        await asyncio.to_thread(self._write, self._take())

    # -- handing records to control planes ---------------------------------------------------------
    def batch(self, limit: int = BATCH) -> list[dict[str, Any]]:
        """The oldest pending records."""
        out: list[dict[str, Any]] = []
        for record, _ in self.pending.values():
            if len(out) >= limit:
                break
            out.append(record)
        return out

    async def wait_stored(self, seq: int, timeout_s: float) -> bool:
        """Have the sending loop post now, and wait until a control plane stored record `seq`;
        False if it did not within `timeout_s` (or no loop sends: the record stays journaled)."""
        if not self.sending or not seq:
            return False
        self.kick.set()
        deadline = time.monotonic() + timeout_s
        while self._acked < seq:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._ack_event.wait(), left)
            except TimeoutError:
                return False
        return True

    def acknowledge(self, up_to: int) -> None:
        """A control plane stored every record up to sequence number `up_to`."""
        self._acked = max(self._acked, up_to)
        acked, self._ack_event = self._ack_event, asyncio.Event()
        acked.set()
        done = 0
        while self.pending:
            seq = next(iter(self.pending))
            if seq > up_to:
                break
            del self.pending[seq]
            done += 1
        if done:
            self._unwritten.append(json.dumps({"ack": up_to}))
            self._acked_lines += done


async def send_usage(meter: UsageMeter, post: Callable[[list[dict[str, Any]]], Any],
                     stop: asyncio.Event, interval_s: float = 0.25) -> None:
    """Until `stop`: flush the journal and post the pending records, batch by batch, to `post`
    (an awaitable that returns once a control plane committed them, or raises); acknowledge on
    success, retry later on failure."""
    failures = 0
    meter.sending = True
    while not stop.is_set():
        meter.kick.clear()
        try:
            await meter.flush()
            records = meter.batch()
            if records:
                await post(records)
                meter.acknowledge(records[-1]["seq"])
                failures = 0
                if len(meter.pending) >= BATCH:
                    continue  # more to send: at once
        except Exception as exc:  # no control plane took them: they stay pending, and journaled
            failures += 1
            if failures in (1, 10) or failures % 100 == 0:
                log.warning("event=usage_send_failed failures=%d pending=%d error=%r",
                            failures, len(meter.pending), exc)
        await _either(stop, meter.kick, interval_s * min(4, 1 + failures))
    meter.sending = False
    # Stopping: what is left (the instances just stopped, say) is journaled, and sent if it can be.
    with contextlib.suppress(Exception):
        await meter.flush()
        while meter.pending:
            records = meter.batch()
            await post(records)
            meter.acknowledge(records[-1]["seq"])
        await meter.flush()


async def _either(a: asyncio.Event, b: asyncio.Event, timeout_s: float) -> None:
    """Return once `a` or `b` is set, or after `timeout_s`."""
    waits = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
