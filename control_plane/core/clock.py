"""The injected clock: everything that measures idle time or deadlines asks a `Clock`."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds; tests pass a clock they move by hand."""

    def now(self) -> float:
        """Seconds on a monotonic scale (only differences are meaningful)."""
        ...


class SystemClock:
    """The real monotonic clock."""

    def now(self) -> float:
        """`time.monotonic()`."""
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def now(self) -> float:
        """The current manual time."""
        return self.t

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.t += seconds
