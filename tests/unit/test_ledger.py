"""The gateway's ledger of answered calls: what a control plane saw of the calls it answered, kept
until their node's own usage records are stored, and stored in their place for a node that
vanished with records it had not sent (never twice: both are keyed by request id)."""

from __future__ import annotations

import time
from pathlib import Path

from control_plane.core import ManualClock
from control_plane.gateway.ledger import Answered, AnsweredCalls
from control_plane.metering import Metering, PriceSheet
from control_plane.store import Store, invocation_row
from node_agent.protocol import UsageRecord


def _note(clock: ManualClock, node: str = "n1", function: str = "acme/f") -> Answered:
    return Answered(clock.now(), node, f"{function.replace('/', '.')}-abc", function, 3, 256, time.time(),
                    12_345, "ok")


def test_notes_are_kept_until_their_nodes_records_are_stored() -> None:
    clock = ManualClock()
    ledger = AnsweredCalls(clock, keep_s=30)
    ledger.add("r1", _note(clock))
    ledger.add("r2", _note(clock))
    ledger.add("r3", _note(clock, node="n2"))
    ledger.stored("n2", ["r1"])  # another node cannot settle n1's calls
    ledger.stored("n1", ["r1", "unknown"])
    assert list(ledger.notes) == ["r2", "r3"]
    calls = ledger.take_node("n1")
    assert [c["request_id"] for c in calls] == ["r2"] and list(ledger.notes) == ["r3"]
    record = UsageRecord.model_validate(calls[0])  # the shape a node sends
    assert (record.function, record.version, record.memory_mib, record.duration_us, record.init_ms) == \
        ("acme/f", 3, 256, 12_345, 0.0)
    assert ledger.take_node("n1") == []


def test_the_ledger_is_bounded_in_time_and_size() -> None:
    clock = ManualClock()
    ledger = AnsweredCalls(clock, keep_s=10, max_entries=100)
    for i in range(50):
        ledger.add(f"old{i}", _note(clock))
    clock.advance(11)
    ledger.add("new", _note(clock))
    assert list(ledger.notes) == ["new"]  # older than keep_s: gone
    for i in range(500):
        ledger.add(f"r{i}", _note(clock))
    assert len(ledger.notes) == 100 and next(iter(ledger.notes)) == "r400"


def test_witnessed_calls_fill_in_only_what_the_node_did_not_deliver(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    metering = Metering(store, None, PriceSheet(), lambda *a, **k: None, ManualClock())
    clock = ManualClock()
    ledger = AnsweredCalls(clock, keep_s=30)
    for rid in ("r1", "r2", "r3"):
        ledger.add(rid, _note(clock))
    # The node delivered r1 itself (with its init time) before it vanished.
    own = ledger.take_node("n1")[0] | {"init_ms": 400.0, "duration_us": 12_000}
    store.add_usage([invocation_row("acme", "n1", own)], [])
    for rid in ("r1", "r2", "r3"):
        ledger.add(rid, _note(clock))
    assert metering.ingest_witnessed("n1", ledger.take_node("n1")) == 2
    rows = {r.request_id: r for r in store.usage_rows()}
    assert set(rows) == {"r1", "r2", "r3"}
    assert rows["r1"].init_ms == 400  # the node's own record stands
    assert rows["r2"].init_ms == 0 and rows["r2"].billed_ms == 13 and rows["r2"].tenant == "acme"
    assert metering.ingest_witnessed("n1", [own]) == 0  # never twice
