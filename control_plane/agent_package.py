"""The Cumulus package as a wheel, served to new nodes so that they install the very same agent
the control plane runs (`pip install <control plane>/v1/agent/package/<wheel>`)."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

log = logging.getLogger("cumulus.package")

SOURCE = Path(__file__).resolve().parent.parent


class AgentPackage:
    """Builds the wheel once (lazily, by `pip wheel --no-deps` of the source tree) and caches it."""

    def __init__(self, out_dir: Path, source: Path = SOURCE) -> None:
        self.out_dir = out_dir
        self.source = source
        self._lock = threading.Lock()

    def wheel(self) -> Path:
        """The wheel's path, building it on first use."""
        with self._lock:
            found = sorted(self.out_dir.glob("cumulus-*.whl"))
            if found:
                return found[-1]
            if not (self.source / "pyproject.toml").exists():
                raise FileNotFoundError(f"no source tree at {self.source} to build the agent package from")
            self.out_dir.mkdir(parents=True, exist_ok=True)
            proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                                   "--disable-pip-version-check", "-w", str(self.out_dir), str(self.source)],
                                  capture_output=True, text=True, timeout=600, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"building the agent package failed: {proc.stderr[-2000:]}")
            wheel = sorted(self.out_dir.glob("cumulus-*.whl"))[-1]
            log.info("event=agent_package_built path=%s", wheel)
            return wheel
