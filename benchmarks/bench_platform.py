"""Starting a bare control plane for the benchmarks: no example function, no nodes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent


def start_control_plane(data_dir: Path, port: int, *, db: str = "",
                        env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`cumulus up` on `port` with `data_dir` (and `db` if given), output discarded."""
    cmd = [sys.executable, "-m", "control_plane.cli", "up", "--data-dir", str(data_dir),
           "--port", str(port), "--no-example", "--min-nodes", "0", "--max-nodes", "0"]
    cmd += ["--db", db] if db else []
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={"DOCKER_HOST": "unix:///run/cumulus-docker.sock", **os.environ,
                                 **(env or {})})


def wait(predicate: Callable[[], object], timeout_s: float, interval_s: float = 0.02) -> None:
    """Poll `predicate` (connection errors count as not yet) until true; exit after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (requests.RequestException, OSError):
            pass
        time.sleep(interval_s)
    raise SystemExit(f"timed out after {timeout_s}s")
