"""StopTracker: a stop is asked once at a time, a confirmed one hides stale reports for a while,
and an unconfirmed one is remembered until its node is gone."""

from __future__ import annotations

from control_plane.core import ManualClock
from control_plane.gateway import Instance, StopTracker
from placement import Resources


def _inst(instance_id: str, node_id: str = "n1") -> Instance:
    return Instance(id=instance_id, function="f", version=1, node_id=node_id, node_url="http://n",
                    concurrency=1, resources=Resources.ZERO)


def test_a_stop_in_flight_is_not_asked_twice_and_hides_reports() -> None:
    stops = StopTracker(ManualClock())
    assert stops.begin(_inst("a"))
    assert not stops.begin(_inst("a"))
    assert stops.settling("a")
    assert stops.unconfirmed("a") is not None  # until the agent confirms


def test_a_confirmed_stop_hides_stale_reports_for_a_while_only() -> None:
    clock = ManualClock()
    stops = StopTracker(clock, recent_s=30)
    stops.begin(_inst("a"))
    stops.confirmed("a")
    assert stops.unconfirmed("a") is None
    assert stops.settling("a")
    clock.advance(31)
    assert not stops.settling("a")
    assert stops.begin(_inst("a"))  # asked again if it ever shows up again


def test_a_failed_stop_stays_unconfirmed_and_can_be_made_again() -> None:
    stops = StopTracker(ManualClock())
    inst = _inst("a")
    stops.begin(inst)
    stops.failed("a")
    assert not stops.settling("a")
    assert stops.unconfirmed("a") is inst
    assert stops.begin(inst)


def test_unconfirmed_stops_of_a_gone_node_are_forgotten() -> None:
    stops = StopTracker(ManualClock())
    for inst in (_inst("a", "n1"), _inst("b", "n2"), _inst("c", "n1")):
        stops.begin(inst)
        stops.failed(inst.id)
    assert sorted(stops.forget_node("n1")) == ["a", "c"]
    assert stops.unconfirmed("a") is None and stops.unconfirmed("b") is not None


def test_old_confirmations_are_pruned() -> None:
    clock = ManualClock()
    stops = StopTracker(clock, recent_s=30)
    for i in range(100):
        stops.begin(_inst(f"i{i}"))
        stops.confirmed(f"i{i}")
        clock.advance(1)
    assert len(stops._recent) <= 31
