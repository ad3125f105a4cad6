"""When a schedule fires: a cron expression in a time zone (croniter, which knows DST: a time that
does not exist that day fires at the next one that does, a time that exists twice fires once), or
a fixed rate. Pure: the time comes in as an argument.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass

from croniter import croniter

RATE = re.compile(r"^(\d+)\s*(s|m|h|d)$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_RATE_S = 1
MAX_RATE_S = 366 * 86400
CATCH_UP_LIMIT = 100_000  # firings walked to find the last one missed (a minutely cron: ~69 days)


class InvalidSchedule(ValueError):
    """A cron expression, rate or time zone that cannot be used, named."""


@dataclass(frozen=True, slots=True)
class When:
    """A schedule's timing: `cron` in `tz`, or every `rate_s` seconds from `anchor`."""

    cron: str | None = None
    tz: str = "UTC"
    rate_s: float | None = None
    anchor: float = 0.0  # a rate's first firing (its creation)

    @classmethod
    def of(cls, *, cron: str | None, rate: str | None, tz: str = "UTC", anchor: float = 0.0) -> When:
        """Checked: exactly one of cron and rate, a known time zone."""
        if (cron is None) == (rate is None):
            raise InvalidSchedule("give a cron expression or a rate, one of them")
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise InvalidSchedule(f"unknown time zone {tz[:60]!r} (an IANA name, as Europe/Berlin)") from None
        if cron is not None:
            cron = " ".join(cron.split())
            if len(cron.split()) != 5 or not croniter.is_valid(cron):
                raise InvalidSchedule(f"{cron[:100]!r} is not a cron expression of five fields "
                                      "(minute hour day-of-month month day-of-week)")
            return cls(cron=cron, tz=tz)
        assert rate is not None
        m = RATE.match(rate.strip())
        if not m:
            raise InvalidSchedule(f"{rate[:40]!r} is not a rate: a number and s, m, h or d (as 5m)")
        seconds = int(m.group(1)) * UNIT_S[m.group(2)]
        if not MIN_RATE_S <= seconds <= MAX_RATE_S:
            raise InvalidSchedule(f"a rate is between {MIN_RATE_S} s and 366 days, not {rate!r}")
        return cls(rate_s=float(seconds), tz=tz, anchor=anchor)

    def next_after(self, t: float) -> float:
        """The first firing strictly after `t`."""
        if self.rate_s is not None:
            if t < self.anchor:
                return self.anchor
            n = int((t - self.anchor) // self.rate_s) + 1
            return self.anchor + n * self.rate_s
        assert self.cron is not None
        zone = zoneinfo.ZoneInfo(self.tz)
        times = croniter(self.cron, dt.datetime.fromtimestamp(t, zone))
        wall_hours = self.cron.split()[1] != "*"
        for _ in range(3):
            at = float(times.get_next(float))
            # A wall time that happens twice (the hour repeated when DST ends) fires at its first
            # occurrence only, when the expression names hours; every real hour fires otherwise.
            if not (wall_hours and dt.datetime.fromtimestamp(at, zone).fold):
                return at
        return at

    def last_due(self, first: float, now: float) -> float:
        """The latest firing in [first, now] (`first` being one); `first` if none later is."""
        if self.rate_s is not None:
            return first + ((now - first) // self.rate_s) * self.rate_s
        due = first
        for _ in range(CATCH_UP_LIMIT):
            after = self.next_after(due)
            if after > now:
                return due
            due = after
        return due

    def describe(self) -> str:
        if self.rate_s is not None:
            return f"every {self.rate_s:g}s"
        return f"cron {self.cron} ({self.tz})"
