"""The Cumulus package as a wheel, served to new nodes so that they install the very same agent
the control plane runs (`pip install <control plane>/v1/agent/package/<wheel>`).

The wheel is assembled directly from the installed source (the package is pure Python): no build
backend, no network, milliseconds. Its metadata carries the dependencies from pyproject.toml, so
pip on the node installs those from its index.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import threading
import tomllib
import zipfile
from pathlib import Path

log = logging.getLogger("cumulus.package")

SOURCE = Path(__file__).resolve().parent.parent
PACKAGES = ("control_plane", "node_agent", "provisioners", "placement")


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(source: Path, out_dir: Path) -> Path:
    """Write `cumulus-<version>-py3-none-any.whl` from the source tree into `out_dir`."""
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    dist_info = f"{name}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for package in PACKAGES:
        for path in sorted((source / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                files[str(path.relative_to(source))] = path.read_bytes()
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
                f"Requires-Python: {project.get('requires-python', '>=3.11')}"]
    metadata += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    files[f"{dist_info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{dist_info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: cumulus\nRoot-Is-Purelib: true\n"
                                   b"Tag: py3-none-any\n")
    entry = "\n".join(f"{k} = {v}" for k, v in project.get("scripts", {}).items())
    files[f"{dist_info}/entry_points.txt"] = f"[console_scripts]\n{entry}\n".encode()
    record = [_record_line(n, d) for n, d in files.items()] + [f"{dist_info}/RECORD,,"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, d in files.items():
            zf.writestr(zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0)), d)
        zf.writestr(zipfile.ZipInfo(f"{dist_info}/RECORD", date_time=(1980, 1, 1, 0, 0, 0)),
                    "\n".join(record) + "\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{name}-{version}-py3-none-any.whl"
    tmp = wheel.with_suffix(".part")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(wheel)
    return wheel


class AgentPackage:
    """Builds the wheel once, on first use, and caches it."""

    def __init__(self, out_dir: Path, source: Path = SOURCE) -> None:
        self.out_dir = out_dir
        self.source = source
        self._lock = threading.Lock()
        self._wheel: Path | None = None

    def wheel(self) -> Path:
        """The wheel's path, building it on first use."""
        with self._lock:
            if self._wheel is None or not self._wheel.exists():
                if not (self.source / "pyproject.toml").exists():
                    raise FileNotFoundError(f"no source tree at {self.source} for the agent package")
                self._wheel = build_wheel(self.source, self.out_dir)
                log.info("event=agent_package_built path=%s", self._wheel)
            return self._wheel
