"""Fixtures of the integration tier."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import RunningPlatform, start_platform

from provisioners.local import _alive


@pytest.fixture(scope="module", params=["store", pytest.param("nats", marks=pytest.mark.broker)])
def queued(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """A platform whose durable queue is its database (the integration tests' shared platform), or
    a NATS JetStream server (a platform of the module's own)."""
    if request.param == "store":
        yield request.getfixturevalue("platform")
        return
    url = request.getfixturevalue("nats_server")
    env = {**request.getfixturevalue("package_index").pip_env(), "CUMULUS_QUEUE_URL": url}
    plat = start_platform(tmp_path_factory.mktemp("queued-nats"), extra_env=env)
    try:
        yield plat
    finally:
        plat.stop()


@pytest.fixture
def chaos_dir(docker_engine: None, tmp_path: Path) -> Iterator[Path]:
    """A data directory for a chaos test's control plane; whatever happened, no node agent of it
    is left running after."""
    yield tmp_path / "chaos"
    for meta in (tmp_path / "chaos" / "nodes").glob("*/node.json"):
        pid = json.loads(meta.read_text())["pid"]
        if pid and _alive(pid):
            os.kill(pid, signal.SIGTERM)
