"""Starting control planes for the benchmarks: a bare one (no example function, no nodes), or one
with its defaults that a benchmark drives (`start`, `wait_up`, `stop`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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


@dataclass
class Platform:
    """One `cumulus up` a benchmark drives, with the token it calls with."""

    label: str
    proc: subprocess.Popen[bytes]
    data_dir: Path
    port: int
    token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def start(label: str, env: Mapping[str, str] | None = None) -> Platform:
    """`cumulus up` with its defaults (a local node) on a free port and a throwaway data directory,
    `env` on top of this process's; its output in `up.out` there."""
    from provisioners.net import free_port

    data_dir = Path(tempfile.mkdtemp(prefix=f"cumulus-bench-{label}-"))
    port = free_port()
    full = {**os.environ, "DOCKER_HOST": os.environ.get("DOCKER_HOST", "unix:///run/cumulus-docker.sock"),
            **(env or {})}
    log = (data_dir / "up.out").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "control_plane.cli", "up", "--data-dir", str(data_dir),
                             "--port", str(port), "--no-example"], env=full, stdout=log,
                            stderr=subprocess.STDOUT, cwd=REPO)
    return Platform(label, proc, data_dir, port)


def wait_up(p: Platform, timeout_s: float = 180) -> None:
    """Until it serves (exit with its output if it dies or takes too long); then its admin token."""
    deadline = time.monotonic() + timeout_s
    while "Press Ctrl-C" not in (p.data_dir / "up.out").read_text():
        if p.proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit((p.data_dir / "up.out").read_text())
        time.sleep(0.2)
    p.token = (p.data_dir / "admin.token").read_text().strip()


def stop(p: Platform) -> None:
    """Ctrl-C it, and remove its data directory."""
    p.proc.send_signal(signal.SIGINT)
    try:
        p.proc.wait(60)
    except subprocess.TimeoutExpired:
        p.proc.kill()
    shutil.rmtree(p.data_dir, ignore_errors=True)
