"""The gateway's request-time decisions (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from placement.routing import choose_instance, idle_to_stop, instances_to_start


@dataclass
class Inst:
    id: str
    in_flight: int = 0
    concurrency: int = 1
    is_ready: bool = True
    last_used: float = 0.0


def test_choose_least_loaded_ready_instance_with_a_free_slot() -> None:
    insts = [Inst("busy", 1, 1), Inst("starting", 0, 1, is_ready=False), Inst("half", 1, 2),
             Inst("idle", 0, 2)]
    assert choose_instance(insts) is insts[3]


def test_choose_breaks_ties_by_most_recent_use() -> None:
    insts = [Inst("old", last_used=1.0), Inst("new", last_used=5.0), Inst("mid", last_used=3.0)]
    assert choose_instance(insts) is insts[1]


def test_choose_none_when_all_busy_or_starting() -> None:
    assert choose_instance([Inst("a", 1), Inst("b", 0, is_ready=False)]) is None
    assert choose_instance([]) is None


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 5), st.booleans()), max_size=20))
def test_choice_always_has_a_free_slot(specs: list[tuple[int, int, bool]]) -> None:
    insts = [Inst(str(i), min(f, c), c, r) for i, (f, c, r) in enumerate(specs)]
    chosen = choose_instance(insts)
    free = [i for i in insts if i.is_ready and i.in_flight < i.concurrency]
    assert (chosen is None) == (not free)
    if chosen is not None:
        assert chosen.in_flight == min(i.in_flight for i in free)


def test_start_enough_for_waiting_calls_counting_starting_ones() -> None:
    assert instances_to_start(waiting=5, starting=0, total=0, concurrency=1, max_instances=10) == 5
    assert instances_to_start(waiting=5, starting=2, total=2, concurrency=1, max_instances=10) == 3
    assert instances_to_start(waiting=5, starting=0, total=0, concurrency=4, max_instances=10) == 2


@given(st.integers(0, 50), st.integers(0, 10), st.integers(0, 20), st.integers(1, 8), st.integers(1, 20))
def test_never_starts_beyond_max(waiting: int, starting: int, total: int, concurrency: int,
                                 max_i: int) -> None:
    total = max(total, starting)
    n = instances_to_start(waiting=waiting, starting=starting, total=total, concurrency=concurrency,
                           max_instances=max_i)
    assert n >= 0
    assert total + n <= max(max_i, total)


def test_idle_instances_past_keep_alive_stop_oldest_first_keeping_min() -> None:
    insts = [Inst("a", last_used=0.0), Inst("b", last_used=50.0), Inst("c", last_used=95.0),
             Inst("busy", in_flight=1, last_used=0.0)]
    got = idle_to_stop(insts, now=100.0, keep_alive_s=10, min_instances=0)
    assert got.instance_ids == ("a", "b") and "keep-alive" in got.reason
    assert idle_to_stop(insts, now=100.0, keep_alive_s=10, min_instances=3).instance_ids == ("a",)
    assert idle_to_stop(insts, now=100.0, keep_alive_s=1000, min_instances=0).instance_ids == ()
