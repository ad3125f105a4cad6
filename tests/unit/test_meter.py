"""The node's usage meter (`node_agent.meter`): its journal keeps what no control plane acknowledged
across restarts (torn last lines and compactions included), its pending bound holds, and
`send_usage` delivers every record once, acknowledging only after a control plane stored it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from node_agent import meter as meter_module
from node_agent.meter import BATCH, UsageMeter, send_usage
from node_agent.protocol import UsageRecord

NOW = 1_715_774_400.0  # 2024-05-15 12:00 UTC
FAST = 0.001  # the sending loop's interval in these tests (0.25 s in the agent)


def _call(meter: UsageMeter, i: int) -> None:
    """An invocation, the i-th of these tests."""
    meter.invocation(request_id=f"req-{i}", function="acme/alpha", version=1, instance_id="inst-1",
                     memory_mib=256, started_at=NOW + i, duration_us=1000 + i, init_ms=0.0, outcome="ok")


def _stopped(meter: UsageMeter, i: int) -> None:
    """An instance that stopped."""
    meter.instance(instance_id=f"inst-{i}", function="acme/alpha", version=1, memory_mib=256,
                   started_at=NOW, ended_at=NOW + 60, busy_ms=1234.5, init_ms=80.25)


def _seqs(meter: UsageMeter) -> list[int]:
    return list(meter.pending)


def _records(meter: UsageMeter) -> list[dict[str, Any]]:
    return [record for record, _ in meter.pending.values()]


def _journal(path: Path) -> list[dict[str, Any]]:
    """The journal's lines, parsed (every one must be whole)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def _flush(meter: UsageMeter) -> None:
    asyncio.run(meter.flush())


# -- the journal ----------------------------------------------------------------------------------
def test_unacknowledged_records_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    meter = UsageMeter(path)
    for i in range(5):
        _call(meter, i)
    _stopped(meter, 5)
    _flush(meter)
    meter.acknowledge(3)
    _flush(meter)
    kept = _records(meter)

    again = UsageMeter(path)  # the agent restarted
    assert _seqs(again) == [4, 5, 6]
    assert _records(again) == kept
    for record in _records(again):  # what is read back is what a node posts
        UsageRecord.model_validate(record)
    _call(again, 6)  # numbering goes on after what the journal holds
    assert _seqs(again) == [4, 5, 6, 7]


def test_a_restart_sees_nothing_that_was_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    meter = UsageMeter(path)
    for i in range(4):
        _call(meter, i)
    _flush(meter)
    meter.acknowledge(4)
    _flush(meter)
    assert _seqs(UsageMeter(path)) == []


def test_acknowledging_part_of_a_batch_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    meter = UsageMeter(path)
    for i in range(10):
        _call(meter, i)
    sent = meter.batch()
    assert [r["seq"] for r in sent] == list(range(1, 11))
    meter.acknowledge(sent[3]["seq"])
    assert _seqs(meter) == list(range(5, 11))
    assert [r["seq"] for r in meter.batch(limit=3)] == [5, 6, 7]  # the oldest, first
    meter.acknowledge(2)  # already acknowledged: nothing changes
    meter.acknowledge(0)
    assert _seqs(meter) == list(range(5, 11))
    _flush(meter)
    assert _seqs(UsageMeter(path)) == list(range(5, 11))


# A crash mid-write leaves the journal's last line cut anywhere: half a record, or a whole record
# without its newline.
TORN = ['{"kind":"invocation","request_id":"req-to', '{"kind":"invocation","request_id":"req-x",'
        '"function":"acme/alpha","version":1,"instance_id":"inst-1","memory_mib":256,'
        '"started_at":1715774400.0,"duration_us":5,"init_ms":0.0,"outcome":"ok","seq":4}']


@pytest.mark.parametrize("torn", TORN, ids=["half-a-line", "no-newline"])
def test_a_torn_last_line_is_ignored_on_reload(tmp_path: Path, torn: str) -> None:
    path = tmp_path / "usage.jsonl"
    meter = UsageMeter(path)
    for i in range(3):
        _call(meter, i)
    _flush(meter)
    meter.acknowledge(1)
    _flush(meter)
    with path.open("a") as fh:
        fh.write(torn)

    again = UsageMeter(path)
    assert _seqs(again)[:2] == [2, 3]
    assert _records(again)[:2] == _records(meter)


@pytest.mark.parametrize("torn", TORN, ids=["half-a-line", "no-newline"])
def test_records_made_after_a_torn_line_survive_the_next_restart(tmp_path: Path, torn: str) -> None:
    path = tmp_path / "usage.jsonl"
    meter = UsageMeter(path)
    for i in range(3):
        _call(meter, i)
    _flush(meter)
    with path.open("a") as fh:
        fh.write(torn)
    again = UsageMeter(path)
    before = _seqs(again)
    _call(again, 10)
    _call(again, 11)
    _flush(again)

    third = UsageMeter(path)  # restarted once more, nothing acknowledged meanwhile
    assert _seqs(third) == _seqs(again)
    assert _seqs(third)[:len(before)] == before
    assert [r["request_id"] for r in _records(third)][-2:] == ["req-10", "req-11"]


def test_compaction_keeps_exactly_the_unacknowledged_records(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(meter_module, "COMPACT_AFTER", 10)
    path = tmp_path / "usage.jsonl"
    meter = UsageMeter(path)
    for i in range(40):
        _call(meter, i)
    _flush(meter)
    sizes = [path.stat().st_size]
    for seq in range(1, 26):  # acknowledged one by one, the journal brought up to date each time
        meter.acknowledge(seq)
        _flush(meter)
        sizes.append(path.stat().st_size)

    # rewritten after the 10th and the 20th acknowledged record, and smaller each time
    shrank = [seq for seq in range(1, 26) if sizes[seq] < sizes[seq - 1]]
    assert shrank == [10, 20]
    assert sizes[20] < sizes[0]
    lines = _journal(path)
    assert [line["seq"] for line in lines if "seq" in line] == list(range(21, 41))  # the rewrite
    assert [line["ack"] for line in lines if "ack" in line] == list(range(21, 26))  # appended since
    assert not path.with_suffix(".tmp").exists()

    again = UsageMeter(path)
    assert _seqs(again) == list(range(26, 41))
    assert _records(again) == _records(meter)


def test_acknowledging_everything_empties_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    meter = UsageMeter(path)
    for i in range(30):
        _call(meter, i)
    _flush(meter)
    meter.acknowledge(30)
    _flush(meter)
    assert path.read_text() == ""
    assert _seqs(UsageMeter(path)) == []


# -- the pending bound ------------------------------------------------------------------------------
def test_the_pending_bound_drops_the_oldest_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    meter = UsageMeter(tmp_path / "usage.jsonl", max_pending=5)
    with caplog.at_level(logging.ERROR, logger="cumulus.agent.meter"):
        for i in range(12):
            _call(meter, i)
            assert len(meter.pending) <= 5
    assert _seqs(meter) == [8, 9, 10, 11, 12]  # the newest
    assert meter.dropped == 7
    dropped = [r for r in caplog.records if "event=usage_dropped" in r.getMessage()]
    assert len(dropped) == 1 and dropped[0].levelno == logging.ERROR
    assert "dropped=1" in dropped[0].getMessage()


def test_the_pending_bound_holds_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    meter = UsageMeter(path, max_pending=5)
    for i in range(12):  # no control plane answers; the sending loop keeps flushing the journal
        _call(meter, i)
        _flush(meter)
    assert _seqs(meter) == [8, 9, 10, 11, 12]

    again = UsageMeter(path, max_pending=5)
    assert len(again.pending) <= 5
    assert _seqs(again) == [8, 9, 10, 11, 12]


def test_the_journal_of_a_node_cut_off_stays_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(meter_module, "COMPACT_AFTER", 10)
    path = tmp_path / "usage.jsonl"
    meter = UsageMeter(path, max_pending=5)
    for i in range(200):  # never acknowledged: every record but the newest 5 is dropped
        _call(meter, i)
        _flush(meter)
    assert len(path.read_text().splitlines()) <= 5 + 10 + 1


# -- the sending loop -------------------------------------------------------------------------------
class ControlPlane:
    """A fake control plane's usage route: fails the first `failures` posts, then stores; checks
    that nothing it is sent was acknowledged before it answered."""

    def __init__(self, meter: UsageMeter, failures: int = 0,
                 during: Callable[[], None] | None = None) -> None:
        self.meter = meter
        self.failures = failures
        self.during = during  # what happens on the node while a post is in flight
        self.failed: list[list[int]] = []  # the seqs of each failed post
        self.stored: list[list[int]] = []  # the seqs of each successful post
        self.answered = asyncio.Event()  # set on every answer, failed or not

    async def __call__(self, records: list[dict[str, Any]]) -> None:
        seqs = [r["seq"] for r in records]
        assert all(seq in self.meter.pending for seq in seqs), "acknowledged before it was stored"
        assert seqs == sorted(seqs) and seqs, seqs
        await asyncio.sleep(0)
        if self.during is not None:
            self.during()
        self.answered.set()
        if len(self.failed) < self.failures:
            self.failed.append(seqs)
            raise ConnectionError("no control plane")
        self.stored.append(seqs)

    async def until(self, condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Wait until `condition` holds, checking it after each answer (the loop has acknowledged
        by the time this wakes: it does so before it awaits anything)."""
        async with asyncio.timeout(timeout_s):
            while not condition():
                self.answered.clear()
                await self.answered.wait()

    def delivered(self) -> list[int]:
        return [seq for post in self.stored for seq in post]


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_send_usage_retries_until_stored_and_delivers_every_record_once(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    meter = UsageMeter(path)
    total = 2 * BATCH + 500  # several batches
    for i in range(total):
        _call(meter, i)
    plane = ControlPlane(meter, failures=3)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(send_usage(meter, plane, stop, interval_s=FAST))
        await plane.until(lambda: not meter.pending)
        for i in range(total, total + 7):  # recorded while the loop runs
            _call(meter, i)
        await plane.until(lambda: not meter.pending)
        stop.set()
        await asyncio.wait_for(task, 5)

    _run(scenario)
    assert plane.failed == [list(range(1, BATCH + 1))] * 3  # the same oldest batch, retried
    assert plane.delivered() == list(range(1, total + 8))  # every record, once, in order
    assert [len(post) for post in plane.stored][:3] == [BATCH, BATCH, 500]
    assert _seqs(UsageMeter(path)) == []  # and the journal knows it


def test_send_usage_acknowledges_only_what_a_post_carried(tmp_path: Path) -> None:
    meter = UsageMeter(tmp_path / "usage.jsonl")
    for i in range(3):
        _call(meter, i)
    made: list[int] = []

    def a_call_meanwhile() -> None:  # the first ten posts, failed or not, race with a new call
        if len(made) < 10:
            made.append(100 + len(made))
            _call(meter, made[-1])

    plane = ControlPlane(meter, failures=2, during=a_call_meanwhile)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(send_usage(meter, plane, stop, interval_s=FAST))
        await plane.until(lambda: len(plane.stored) >= 2)
        stop.set()
        await asyncio.wait_for(task, 5)

    _run(scenario)
    delivered = plane.delivered()
    assert delivered == sorted(set(delivered))  # nothing twice
    assert len(made) == 10
    assert delivered == list(range(1, 3 + 10 + 1))  # nothing lost (the drain sent the rest)
    assert meter.pending == {}
    assert plane.stored[0] == [1, 2, 3, 4, 5]  # the first stored post: the records made meanwhile too


def test_stopping_drains_what_is_pending(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    meter = UsageMeter(path)
    for i in range(BATCH + 10):
        _call(meter, i)
    _stopped(meter, BATCH + 10)  # the instances the agent stopped on its way out
    plane = ControlPlane(meter)

    async def scenario() -> None:
        stop = asyncio.Event()
        stop.set()
        await asyncio.wait_for(send_usage(meter, plane, stop, interval_s=60), 5)

    _run(scenario)
    assert plane.delivered() == list(range(1, BATCH + 12))
    assert meter.pending == {}
    assert _seqs(UsageMeter(path)) == []


def test_stopping_without_a_control_plane_ends_and_keeps_the_records(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    meter = UsageMeter(path)
    for i in range(5):
        _call(meter, i)
    plane = ControlPlane(meter, failures=1_000_000)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(send_usage(meter, plane, stop, interval_s=60))
        await plane.until(lambda: len(plane.failed) >= 1)
        stop.set()  # wakes the loop from its (long) wait at once
        await asyncio.wait_for(task, 2)

    _run(scenario)
    assert len(plane.failed) == 2  # one in the loop, one while draining: no more
    assert plane.stored == []
    assert _seqs(meter) == [1, 2, 3, 4, 5]
    assert _seqs(UsageMeter(path)) == [1, 2, 3, 4, 5]  # journaled, for the next run to send
