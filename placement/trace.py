"""Azure Functions 2019 trace format, parsed from text already read (no file access here).

A trace is three CSV tables sharing a prefix: `_inv` (invocations per minute of each function), `_run`
(execution-time statistics per function, ms) and `_mem` (allocated-memory statistics per app, MB).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TraceFunction:
    """One function of a trace: its invocations per minute, mean execution time and memory."""

    function: str
    app: str
    invocations: tuple[int, ...]
    duration_ms: float
    memory_mib: int


@dataclass(frozen=True, slots=True)
class Trace:
    """A trace: functions with per-minute invocation counts over `minutes` minutes."""

    functions: tuple[TraceFunction, ...]
    minutes: int

    @property
    def invocations(self) -> int:
        """Invocations in the whole trace."""
        return sum(sum(f.invocations) for f in self.functions)


class TraceFormatError(ValueError):
    """The text is not in the Azure Functions 2019 trace format."""


def _rows(text: str, name: str, required: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise TraceFormatError(f"{name}: empty")
    header = rows[0]
    missing = [c for c in required if c not in header]
    if missing:
        raise TraceFormatError(f"{name}: missing column(s) {', '.join(missing)}")
    return header, [r for r in rows[1:] if r]


def parse_trace(
    inv_csv: str,
    run_csv: str,
    mem_csv: str,
    *,
    default_duration_ms: float = 1000.0,
    default_memory_mib: int = 256,
) -> Trace:
    """Build a `Trace` from the text of the three tables.

    A function's memory is its app's average allocated memory divided among the app's functions in the
    trace (the app is what Azure loads); missing statistics fall back to the defaults given.
    """
    header, inv = _rows(inv_csv, "invocations", ("HashFunction", "HashApp"))
    fi, ai = header.index("HashFunction"), header.index("HashApp")
    minute_cols = [i for i, c in enumerate(header) if c.startswith("minute_") or c.isdigit()]
    if not minute_cols:
        raise TraceFormatError("invocations: no minute columns")
    rheader, run = _rows(run_csv, "durations", ("HashFunction", "Average"))
    durations: dict[str, float] = {}
    for r in run:
        try:
            durations[r[rheader.index("HashFunction")]] = float(r[rheader.index("Average")])
        except (ValueError, IndexError) as e:
            raise TraceFormatError(f"durations: bad row {r[:2]}: {e}") from e
    mheader, mem = _rows(mem_csv, "memory", ("HashApp", "AverageAllocatedMb"))
    app_mem: dict[str, float] = {}
    for r in mem:
        try:
            app_mem[r[mheader.index("HashApp")]] = float(r[mheader.index("AverageAllocatedMb")])
        except (ValueError, IndexError) as e:
            raise TraceFormatError(f"memory: bad row {r[:2]}: {e}") from e
    per_app: dict[str, int] = {}
    for r in inv:
        per_app[r[ai]] = per_app.get(r[ai], 0) + 1
    functions = []
    for r in inv:
        try:
            counts = tuple(int(float(r[i])) for i in minute_cols)
        except (ValueError, IndexError) as e:
            raise TraceFormatError(f"invocations: bad row for {r[fi][:12]}: {e}") from e
        app = r[ai]
        mib = app_mem.get(app)
        memory = max(16, round(mib / per_app[app])) if mib is not None else default_memory_mib
        duration = durations.get(r[fi], default_duration_ms)
        functions.append(TraceFunction(r[fi], app, counts, max(duration, 1.0), memory))
    return Trace(tuple(functions), len(minute_cols))


def load_profile(
    invocations: tuple[int, ...], duration_ms: float, *, points: int = 8
) -> dict[int, tuple[float, float]]:
    """Requests in flight, minute by minute: `{minute: (peak, mean)}` for minutes with any load.

    Invocations start uniformly within their minute and run for `duration_ms`, so long executions
    carry over into later minutes. In-flight counts are sampled at `points` mid-points of each minute.
    """
    d = max(duration_ms, 1.0) / 1000.0
    span = math.ceil(d / 60.0) + 1
    starts = {j: n for j, n in enumerate(invocations) if n}
    minutes = sorted({j + k for j in starts for k in range(span + 1) if j + k < len(invocations)})

    def in_flight(m: int, t: float) -> float:
        total = 0.0
        for j in range(max(0, m - span), m + 1):
            n = starts.get(j)
            if n:
                lo, hi = max(60.0 * j, t - d), min(60.0 * j + 60.0, t)
                if hi > lo:
                    total += n * (hi - lo) / 60.0
        return total

    out: dict[int, tuple[float, float]] = {}
    for m in minutes:
        samples = [in_flight(m, 60.0 * m + 60.0 * (i + 0.5) / points) for i in range(points)]
        peak = max(samples)
        if peak > 0:
            out[m] = (peak, sum(samples) / points)
    return out
