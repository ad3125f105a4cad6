"""Invocation records: one per call, buffered in memory on the hot path and written in batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class InvocationRecord:
    """One invocation's outcome and its captured stdout/stderr."""

    function: str
    version: int
    request_id: str
    started_at: float  # wall clock
    duration_ms: float
    outcome: str
    cold_start: bool
    logs: str

    def row(self) -> dict[str, Any]:
        """The record as the invocation log's columns."""
        return {"function": self.function, "version": self.version, "request_id": self.request_id,
                "started_at": self.started_at, "duration_ms": self.duration_ms, "outcome": self.outcome,
                "cold_start": self.cold_start, "logs": self.logs}


class InvocationBuffer:
    """Records not written yet; `append` is all the hot path does (no lock: one event loop)."""

    def __init__(self) -> None:
        self._records: list[InvocationRecord] = []

    def append(self, record: InvocationRecord) -> None:
        """Keep a record until the next flush."""
        self._records.append(record)

    def take(self) -> list[InvocationRecord]:
        """The records so far, forgotten here."""
        batch, self._records = self._records, []
        return batch

    def __len__(self) -> int:
        return len(self._records)
