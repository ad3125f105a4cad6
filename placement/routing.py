"""Request-time decisions of the gateway: which warm instance serves a call, how many to start,
and which idle instances to stop. Pure: the caller passes the instances and the time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar


class InstanceLoad(Protocol):
    """What routing needs to know of an instance (the gateway's own objects satisfy it)."""

    @property
    def id(self) -> str: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def is_ready(self) -> bool: ...
    @property
    def last_used(self) -> float: ...


T = TypeVar("T", bound=InstanceLoad)


def choose_instance(instances: Iterable[T]) -> T | None:
    """The least-loaded ready instance with a free slot; on a tie, the most recently used one
    (so that, under light load, the others go idle and can be reclaimed)."""
    best: T | None = None
    for inst in instances:
        if not inst.is_ready or inst.in_flight >= inst.concurrency:
            continue
        if (
            best is None
            or inst.in_flight < best.in_flight
            or (inst.in_flight == best.in_flight and inst.last_used > best.last_used)
        ):
            best = inst
    return best


def instances_to_start(
    *, waiting: float, starting: int, total: int, concurrency: float, max_instances: int
) -> int:
    """How many new instances to start for `waiting` calls that found no free slot, counting the
    slots of instances already starting, never going above `max_instances` in all. The gateway
    asks it for the calls queued now; the simulator for a minute's concurrency beyond its loaded
    instances (a fraction of a call still needs an instance)."""
    needed = math.ceil(waiting / max(concurrency, 1e-9) - 1e-9) - starting
    return max(0, min(needed, max_instances - total))


@dataclass(frozen=True, slots=True)
class Reclaim:
    """Instances to stop, and why."""

    instance_ids: tuple[str, ...]
    reason: str


def idle_to_stop(instances: Sequence[T], *, now: float, keep_alive_s: float, min_instances: int) -> Reclaim:
    """Ready instances idle for at least `keep_alive_s`, oldest-idle first, keeping `min_instances`."""
    idle = sorted(
        (i for i in instances if i.is_ready and i.in_flight == 0 and now - i.last_used >= keep_alive_s),
        key=lambda i: i.last_used,
    )
    spare = max(0, len(instances) - min_instances)
    chosen = tuple(i.id for i in idle[:spare])
    reason = (
        (
            f"{len(chosen)} instance(s) idle for {keep_alive_s:g}s or more (keep-alive), "
            f"keeping min {min_instances}"
        )
        if chosen
        else ""
    )
    return Reclaim(chosen, reason)
