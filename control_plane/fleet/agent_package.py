"""The Cumulus package as a wheel, served to new nodes so that they install the very same agent
the control plane runs: `pip install 'cumulus[agent] @ <control plane>/v1/agent/package/<wheel>'`.

The wheel is assembled directly from the installed source (the package is pure Python): no build
backend, no network, milliseconds. Its metadata carries the dependencies and extras of
pyproject.toml, so a node asks for the `agent` extra and pip installs only what the agent needs.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import io
import logging
import re
import threading
import tomllib
import zipfile
from pathlib import Path
from typing import Any

log = logging.getLogger("cumulus.package")

SOURCE = Path(__file__).resolve().parents[2]
PACKAGES = ("control_plane", "node_agent", "provisioners", "placement")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _with_extra(requirement: str, extra: str) -> str:
    """`requirement` asked for only with `extra` (PEP 508 marker)."""
    spec, sep, marker = requirement.partition(";")
    condition = f'extra == "{extra}"'
    return f"{spec.strip()}; ({marker.strip()}) and {condition}" if sep else f"{spec.strip()}; {condition}"


def metadata(project: dict[str, Any]) -> str:
    """The METADATA of the wheel: name, version, dependencies and every extra."""
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {project['version']}",
             f"Requires-Python: {project.get('requires-python', '>=3.11')}"]
    lines += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    for extra, deps in project.get("optional-dependencies", {}).items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f"Requires-Dist: {_with_extra(dep, extra)}" for dep in deps]
    return "\n".join(lines) + "\n"


def build_wheel(source: Path, out_dir: Path) -> Path:
    """Write `cumulus-<version>-py3-none-any.whl` from the source tree into `out_dir`."""
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    dist_info = f"{name}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for package in PACKAGES:
        for path in sorted((source / package).rglob("*")):
            if "__pycache__" in path.parts or not path.is_file() or path.suffix not in (".py", ".mako"):
                continue
            files[path.relative_to(source).as_posix()] = path.read_bytes()
    files[f"{dist_info}/METADATA"] = metadata(project).encode()
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


def pinned(requirements: list[str], self_name: str, extras: dict[str, list[str]]) -> list[str]:
    """`requirements` pinned to the versions installed here, the project's own extras expanded
    (`cumulus[agent]` inside another extra); an uninstalled one is left as written."""
    out: list[str] = []
    for req in requirements:
        match = _NAME.match(req)
        name = match.group(1) if match else req
        if name == self_name:
            for extra in re.findall(r"[A-Za-z0-9_-]+", req[len(name):].partition("]")[0]):
                out += pinned(extras.get(extra, []), self_name, extras)
            continue
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(req)
    return list(dict.fromkeys(out))


class AgentPackage:
    """Builds the wheel once, on first use, and caches it."""

    def __init__(self, out_dir: Path, source: Path = SOURCE) -> None:
        self.out_dir = out_dir
        self.source = source
        self._lock = threading.Lock()
        self._wheel: Path | None = None

    def _project(self) -> dict[str, Any]:
        if not (self.source / "pyproject.toml").exists():
            raise FileNotFoundError(f"no source tree at {self.source} for the agent package")
        project: dict[str, Any] = tomllib.loads((self.source / "pyproject.toml").read_text())["project"]
        return project

    def wheel(self) -> Path:
        """The wheel's path, building it on first use."""
        with self._lock:
            if self._wheel is None or not self._wheel.exists():
                self._project()
                self._wheel = build_wheel(self.source, self.out_dir)
                log.info("event=agent_package_built path=%s", self._wheel)
            return self._wheel

    def requirements(self, extra: str = "agent") -> tuple[str, ...]:
        """What `cumulus[extra]` needs beyond the package itself, pinned to what runs here (a VM
        image installs exactly these for the agent)."""
        project = self._project()
        extras: dict[str, list[str]] = project.get("optional-dependencies", {})
        return tuple(pinned([*project.get("dependencies", []), *extras.get(extra, [])], project["name"],
                            extras))
