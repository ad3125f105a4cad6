"""Schedules (`control_plane.schedules`) on SQLite and PostgreSQL with a hand-driven clock: cron in
a time zone across DST, rates, a firing missed while no control plane ran (fired once on return,
or skipped), two control planes ticking on one database firing each time exactly once, and what a
bad schedule is told. The firing's event is EventBridge's scheduled event."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import zoneinfo
from pathlib import Path

import pytest

from control_plane.core import ConflictError, InvalidConfig
from control_plane.jobs import AsyncCalls, AsyncSettings, Outcome, StoreQueue
from control_plane.schedules import InvalidSchedule, Schedules, When
from control_plane.store import Store

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def berlin(*args: int) -> float:
    return dt.datetime(*args, tzinfo=BERLIN).timestamp()


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}" if request.param == "sqlite" else \
        str(request.getfixturevalue("postgres_db"))
    return Store(url)


def _world(store: Store, clock: Clock) -> tuple[Schedules, AsyncCalls]:
    async def never(key: str, event: bytes, call_id: str) -> Outcome:
        raise AssertionError("no call runs here")
    calls = AsyncCalls(store, StoreQueue(store, wall=clock), never, lambda _: AsyncSettings(tenant="default"),
                       wall=clock)
    return Schedules(store, calls.enqueue, wall=clock), calls


# -- when -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cron", "after", "expected"), [
    ("0 3 * * *", berlin(2026, 3, 28, 12, 0), berlin(2026, 3, 29, 3, 0)),      # CEST from that night
    ("30 2 * * *", berlin(2026, 3, 28, 12, 0), berlin(2026, 3, 29, 3, 0)),     # 02:30 does not exist
    ("30 2 * * *", berlin(2026, 10, 24, 12, 0), berlin(2026, 10, 25, 2, 30)),  # exists twice: once
    ("*/15 * * * *", berlin(2026, 1, 1, 10, 7), berlin(2026, 1, 1, 10, 15)),
    ("0 9 * * 1", berlin(2026, 12, 3, 12, 0), berlin(2026, 12, 7, 9, 0)),      # Mondays
])
def test_a_cron_fires_at_its_local_time_across_dst(cron: str, after: float, expected: float) -> None:
    assert When.of(cron=cron, rate=None, tz="Europe/Berlin").next_after(after) == expected


def test_a_wall_time_that_exists_twice_fires_once_and_every_real_hour_still_fires() -> None:
    when = When.of(cron="30 2 * * *", rate=None, tz="Europe/Berlin")
    first = when.next_after(berlin(2026, 10, 24, 12, 0))
    assert when.next_after(first) == berlin(2026, 10, 26, 2, 30)
    hourly = When.of(cron="30 * * * *", rate=None, tz="Europe/Berlin")
    at, seen = berlin(2026, 10, 25, 1, 0), []
    for _ in range(4):
        at = hourly.next_after(at)
        seen.append(at)
    assert [b - a for a, b in itertools.pairwise(seen)] == [3600.0] * 3  # 02:30 twice: two hours


@pytest.mark.parametrize(("rate", "seconds"), [("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400)])
def test_a_rate_fires_every_so_often_from_its_creation(rate: str, seconds: int) -> None:
    when = When.of(cron=None, rate=rate, anchor=1000.0)
    fired = [when.next_after(1000.0 + k * seconds) for k in range(3)]
    assert fired == [1000.0 + k * seconds for k in (1, 2, 3)]
    assert when.last_due(1000.0 + seconds, 1000.0 + 10.5 * seconds) == 1000.0 + 10 * seconds


@pytest.mark.parametrize(("cron", "rate", "tz", "said"), [
    ("61 * * * *", None, "UTC", "not a cron expression"),
    ("* * * *", None, "UTC", "five fields"),
    (None, "5 minutes", "UTC", "not a rate"),
    (None, "0s", "UTC", "between 1 s"),
    (None, None, "UTC", "one of them"),
    ("0 3 * * *", "5m", "UTC", "one of them"),
    ("0 3 * * *", None, "Mars/Olympus", "unknown time zone"),
])
def test_a_bad_schedule_is_named(cron: str | None, rate: str | None, tz: str, said: str) -> None:
    with pytest.raises(InvalidSchedule, match=said):
        When.of(cron=cron, rate=rate, tz=tz)


# -- firing ---------------------------------------------------------------------------------------------
def test_a_rate_fires_when_due_with_a_scheduled_event(store: Store) -> None:
    clock = Clock(1_800_000_000.0)
    schedules, _ = _world(store, clock)

    async def scenario() -> None:
        row = await schedules.add(key="tick", tenant="default", name="tick", function="report", cron=None,
                                  rate="5m", data='{"team": "ops"}')
        assert row.next_fire_at == clock.t + 300
        clock.t += 299
        assert await schedules.tick() == 0
        clock.t += 2
        assert await schedules.tick() == 1 and await schedules.tick() == 0
        [call] = store.async_calls(function="report")
        assert call.source == "schedule:tick"
        job = store.take_jobs("invoke", 10, now=clock.t, lease_s=60)[0]
        event = json.loads(job.body["event"])
        assert event["detail-type"] == "Scheduled Event" and event["detail"] == {"team": "ops"}
        due = dt.datetime.fromtimestamp(1_800_000_300, dt.UTC)
        assert event["time"] == due.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert store.schedule("tick").next_fire_at == 1_800_000_600
    asyncio.run(scenario())


@pytest.mark.parametrize("catch_up", [True, False])
def test_firings_missed_while_down_fire_once_on_return_or_are_skipped(store: Store, catch_up: bool) -> None:
    clock = Clock(berlin(2026, 12, 1, 12, 0))
    schedules, _ = _world(store, clock)

    async def scenario() -> None:
        await schedules.add(key="nightly", tenant="default", name="nightly", function="report",
                            cron="0 3 * * *", rate=None, tz="Europe/Berlin", catch_up=catch_up)
        clock.t = berlin(2026, 12, 4, 9, 0)  # no control plane ran for three nights
        fired = await schedules.tick()
        assert await schedules.tick() == 0
        calls = store.async_calls(function="report")
        if catch_up:
            assert fired == 1 and len(calls) == 1
            job = store.take_jobs("invoke", 10, now=clock.t, lease_s=60)[0]
            assert json.loads(job.body["event"])["time"] == "2026-12-04T02:00:00Z"  # the last one missed
        else:
            assert fired == 0 and calls == []
        row = store.schedule("nightly")
        assert row.next_fire_at == berlin(2026, 12, 5, 3, 0)
        assert row.fired == (1 if catch_up else 0)
    asyncio.run(scenario())


def test_two_control_planes_ticking_fire_each_time_exactly_once(store: Store) -> None:
    clock = Clock(1_800_000_000.0)
    a, _ = _world(store, clock)
    b, _ = _world(store, clock)

    async def scenario() -> None:
        await a.add(key="often", tenant="default", name="often", function="report", cron=None, rate="10s")
        for _ in range(30):  # 300 s: 30 firings, each raced for by both (and by each twice)
            clock.t += 10
            await asyncio.gather(a.tick(), b.tick(), a.tick(), b.tick())
        calls = store.async_calls(function="report", limit=1000)
        assert len(calls) == 30 == store.schedule("often").fired
        times = sorted(json.loads(j.body["event"])["time"]
                       for j in store.take_jobs("invoke", 100, now=clock.t, lease_s=60))
        assert len(set(times)) == 30
    asyncio.run(scenario())


def test_bad_data_or_a_taken_name_is_refused(store: Store) -> None:
    schedules, _ = _world(store, Clock(1_800_000_000.0))

    async def scenario() -> None:
        with pytest.raises(InvalidConfig, match="JSON"):
            await schedules.add(key="x", tenant="default", name="x", function="f", cron=None, rate="1m",
                                data="{nope")
        with pytest.raises(InvalidConfig, match="not a cron"):
            await schedules.add(key="x", tenant="default", name="x", function="f", cron="nope", rate=None)
        await schedules.add(key="x", tenant="default", name="x", function="f", cron=None, rate="1m")
        with pytest.raises(ConflictError):
            await schedules.add(key="x", tenant="default", name="x", function="f", cron=None, rate="1m")
        assert [s.key for s in store.schedules()] == ["x"]
    asyncio.run(scenario())
