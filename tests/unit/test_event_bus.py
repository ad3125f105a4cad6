"""The event bus (`control_plane.eventbus.bus`) on the store (SQLite), with the queue's enqueue
recorded: a rule added on one control plane routes on another within its refresh; a put with one
malformed event routes none; a deleted rule routes no more; tenants' buses are apart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from control_plane.core import InvalidConfig, InvalidEvent
from control_plane.eventbus import EventBus
from control_plane.store import Store


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, str]] = []

    async def __call__(self, function: str, tenant: str, event: bytes, *, source: str = "api",
                       key: str | None = None, delay_s: float = 0.0) -> str:
        self.calls.append((function, tenant, json.loads(event), source))
        return key or "k"


def _bus(tmp_path: Path, refresh_s: float = 0.0) -> tuple[Store, Recorder, EventBus]:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    sent = Recorder()
    return store, sent, EventBus(store, sent, refresh_s=refresh_s)


ORDER = {"source": "shop", "detail-type": "order", "detail": {"total": 150}}


def test_a_rule_added_on_one_control_plane_routes_on_another(tmp_path: Path) -> None:
    store, sent, here = _bus(tmp_path)
    there = EventBus(store, sent, refresh_s=0.0)

    async def scenario() -> None:
        assert (await there.put("acme", [ORDER]))[0]["matched_rules"] == []
        await here.add_rule(key="acme/big", tenant="acme", name="big", target="acme/big-orders",
                            pattern={"detail": {"total": [{"numeric": [">", 100]}]}})
        assert (await there.put("acme", [ORDER]))[0]["matched_rules"] == ["big"]
        assert sent.calls[-1][:2] == ("acme/big-orders", "acme") and sent.calls[-1][3] == "rule:big"
        assert (await there.put("globex", [ORDER]))[0]["matched_rules"] == []  # another tenant's bus
        await here.remove_rule("acme/big")
        assert (await there.put("acme", [ORDER]))[0]["matched_rules"] == []
    asyncio.run(scenario())


def test_a_put_with_one_malformed_event_routes_none(tmp_path: Path) -> None:
    _, sent, bus = _bus(tmp_path)

    async def scenario() -> None:
        await bus.add_rule(key="all", tenant="default", name="all", target="f",
                           pattern={"source": ["shop"]})
        with pytest.raises(InvalidEvent, match="detail"):
            await bus.put("default", [ORDER, {"source": "shop", "detail-type": "x"}])
        with pytest.raises(InvalidEvent, match="1 to 10"):
            await bus.put("default", [ORDER] * 11)
        assert sent.calls == []
    asyncio.run(scenario())


def test_events_get_their_missing_fields_and_transforms_apply(tmp_path: Path) -> None:
    _, sent, bus = _bus(tmp_path)

    async def scenario() -> None:
        await bus.add_rule(key="t", tenant="default", name="t", target="f", pattern={"source": ["shop"]},
                           input_paths={"n": "$.detail.total"},
                           input_template='{"n": <n>, "rule": "<aws.events.rule-name>"}')
        [routed] = await bus.put("default", [ORDER])
        assert routed["id"] and sent.calls[0][2] == {"n": 150, "rule": "t"}
        with pytest.raises(InvalidConfig, match="transform"):
            await bus.add_rule(key="u", tenant="default", name="u", target="f", pattern={"source": ["x"]},
                               input_paths={"n": "detail.total"}, input_template="<n>")
    asyncio.run(scenario())
