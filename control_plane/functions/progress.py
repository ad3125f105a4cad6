"""What a deploy's build is doing, for the CLI to show while the deploy request runs.

The client names its deploy with a build id (`X-Cumulus-Build-Id`); the control plane records the
stages the build goes through under that id, and `GET /v1/builds/{id}` reads them. Kept in memory
by the control plane that builds, bounded in number and expiring after an hour.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field

from cachetools import TTLCache

BUILD_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_BUILDS = 1024
MAX_STAGES = 200
TTL_S = 3600.0


@dataclass
class BuildStatus:
    """The stages of one build so far, and whether it ended."""

    stages: list[tuple[float, str]] = field(default_factory=list)
    done: bool = False
    error: str = ""
    owner: str = ""  # the user who deploys


class BuildProgress:
    """Stages of recent builds, by build id (thread-safe: builds run in worker threads)."""

    def __init__(self) -> None:
        self._builds: TTLCache[str, BuildStatus] = TTLCache(maxsize=MAX_BUILDS, ttl=TTL_S)
        self._lock = threading.Lock()

    def claim(self, build_id: str, owner: str) -> bool:
        """Name a build for `owner`; False if another user's build has this id."""
        with self._lock:
            status = self._builds.get(build_id)
            if status is not None and status.owner != owner:
                return False
            self._builds[build_id] = status or BuildStatus(owner=owner)
            return True

    def stage(self, build_id: str, message: str) -> None:
        """Record that build `build_id` entered a stage."""
        with self._lock:
            status = self._builds.get(build_id)
            if status is None:
                status = self._builds[build_id] = BuildStatus()
            if len(status.stages) < MAX_STAGES:
                status.stages.append((time.time(), message[:500]))

    def finish(self, build_id: str, error: str = "") -> None:
        """Record that the build ended (with the error's message, if it failed)."""
        with self._lock:
            status = self._builds.get(build_id) or BuildStatus()
            status.done, status.error = True, error[:2000]
            self._builds[build_id] = status

    def get(self, build_id: str) -> BuildStatus | None:
        """The build's status, None if unknown here (expired, or built by another control plane)."""
        with self._lock:
            status = self._builds.get(build_id)
            return None if status is None else BuildStatus(list(status.stages), status.done, status.error,
                                                           status.owner)
