"""Resource vectors: how much CPU and memory something needs or a node has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

# The dimensions, in order. Adding one (GPUs, ephemeral disk) means adding a field below with a default
# of 0 and its name here; every operation iterates over this tuple.
DIMENSIONS: tuple[str, ...] = ("cpu_millis", "memory_mib")


@dataclass(frozen=True, slots=True)
class Resources:
    """A vector of resources: CPU in millicores and memory in MiB. Immutable; arithmetic is per dimension."""

    cpu_millis: int = 0
    memory_mib: int = 0

    ZERO: ClassVar[Resources]

    def as_tuple(self) -> tuple[int, ...]:
        """The values in `DIMENSIONS` order."""
        return (self.cpu_millis, self.memory_mib)

    @classmethod
    def from_tuple(cls, values: tuple[int, ...]) -> Resources:
        """Build from values in `DIMENSIONS` order."""
        return cls(*values)

    def __add__(self, other: Resources) -> Resources:
        pairs = zip(self.as_tuple(), other.as_tuple(), strict=True)
        return Resources.from_tuple(tuple(a + b for a, b in pairs))

    def __sub__(self, other: Resources) -> Resources:
        pairs = zip(self.as_tuple(), other.as_tuple(), strict=True)
        return Resources.from_tuple(tuple(a - b for a, b in pairs))

    def __mul__(self, factor: int) -> Resources:
        return Resources.from_tuple(tuple(a * factor for a in self.as_tuple()))

    __rmul__ = __mul__

    def fits(self, capacity: Resources) -> bool:
        """True if every dimension of self is at most the same dimension of `capacity`."""
        return all(a <= b for a, b in zip(self.as_tuple(), capacity.as_tuple(), strict=True))

    def is_zero(self) -> bool:
        """True if every dimension is 0."""
        return all(a == 0 for a in self.as_tuple())

    def is_negative(self) -> bool:
        """True if any dimension is below 0 (an over-commitment when this is a node's free space)."""
        return any(a < 0 for a in self.as_tuple())

    def clamp_zero(self) -> Resources:
        """Negative dimensions raised to 0."""
        return Resources.from_tuple(tuple(max(a, 0) for a in self.as_tuple()))

    def headroom(self, capacity: Resources) -> Resources:
        """What is left of `capacity` once self is taken from it, never below 0."""
        return (capacity - self).clamp_zero()

    def count_in(self, space: Resources) -> int:
        """How many copies of self fit in `space` (a large number when self is zero)."""
        best: int | None = None
        for need, have in zip(self.as_tuple(), space.as_tuple(), strict=True):
            if have < 0:
                return 0
            if need > 0:
                n = have // need
                best = n if best is None else min(best, n)
        return best if best is not None else 2**31

    def max_share_of(self, capacity: Resources) -> float:
        """The largest fraction of `capacity` that self takes in any dimension (0-capacity ones skipped)."""
        shares = [a / b for a, b in zip(self.as_tuple(), capacity.as_tuple(), strict=True) if b > 0]
        return max(shares, default=0.0)

    def __str__(self) -> str:
        return f"{self.cpu_millis}m CPU, {self.memory_mib} MiB"


Resources.ZERO = Resources()
