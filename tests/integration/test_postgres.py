"""The control plane on a real PostgreSQL server: `cumulus up --db postgresql://...`."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import start_platform

pytestmark = [pytest.mark.pg, pytest.mark.docker]


def test_platform_runs_on_postgresql(docker_engine: None, postgres_db: str, tmp_path: Path) -> None:
    plat = start_platform(tmp_path / "pgcp", args=("--db", postgres_db))
    try:
        plat.deploy_ok("onpg", {"main.py": "def handler(event, context):\n    print('pg')\n    return 7\n"})
        assert plat.invoke("onpg", {}).json() == 7
        assert plat.get("/v1/functions/onpg")["version"] == 1
        assert [r["logs"] for r in plat.get("/v1/functions/onpg/logs")] == ["pg\n"]
    finally:
        plat.stop()
    again = start_platform(tmp_path / "pgcp", args=("--db", postgres_db))  # state survives a restart
    try:
        assert again.invoke("onpg", {}).json() == 7
    finally:
        again.stop()
