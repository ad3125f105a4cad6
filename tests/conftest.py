"""Fixtures shared by every tier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import RunningPlatform, docker_client, start_platform


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A real Docker engine must answer (`make test` starts one)."""
    try:
        docker_client().ping()
    except Exception as exc:  # pragma: no cover - environment problem, reported clearly
        pytest.fail(f"no Docker engine: {exc}. Run the suite with `make test`, which starts one.")


@pytest.fixture(scope="session")
def platform(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """One `cumulus up` (SQLite, one local node) shared by the integration tests."""
    plat = start_platform(tmp_path_factory.mktemp("platform"))
    try:
        yield plat
    finally:
        plat.stop()
