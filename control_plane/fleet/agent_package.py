"""The Cumulus package as a wheel, served to new nodes so that they install the very same agent
the control plane runs: `pip install 'cumulus[agent] @ <control plane>/v1/agent/package/<wheel>'`.

The wheel is assembled from what this control plane runs (the package is pure Python): from its
source tree (a checkout, an editable install) or, installed from a wheel, from its installed
distribution. No build backend, no network, milliseconds. Its metadata carries the dependencies
and extras of pyproject.toml, so a node asks for the `agent` extra and pip installs only what the
agent needs.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import io
import logging
import threading
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

log = logging.getLogger("cumulus.package")

SOURCE = Path(__file__).resolve().parents[2]
PACKAGES = ("control_plane", "node_agent", "provisioners", "placement")
SUFFIXES = (".py", ".mako")  # the code, and alembic's revision template
DISTRIBUTION = "cumulus"


@dataclass(frozen=True)
class Distribution:
    """What a wheel is made of: name, version, its METADATA and entry points, and its files."""

    name: str
    version: str
    metadata: str
    entry_points: str
    files: dict[str, bytes]  # path in the archive -> content


def _with_extra(requirement: str, extra: str) -> str:
    """`requirement` asked for only with `extra` (PEP 508 marker)."""
    spec, sep, marker = requirement.partition(";")
    condition = f'extra == "{extra}"'
    return f"{spec.strip()}; ({marker.strip()}) and {condition}" if sep else f"{spec.strip()}; {condition}"


def metadata(project: dict[str, Any]) -> str:
    """The METADATA of pyproject's `project` table: name, version, dependencies and every extra."""
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {project['version']}",
             f"Requires-Python: {project.get('requires-python', '>=3.11')}"]
    lines += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    for extra, deps in project.get("optional-dependencies", {}).items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f"Requires-Dist: {_with_extra(dep, extra)}" for dep in deps]
    return "\n".join(lines) + "\n"


def from_source(source: Path) -> Distribution:
    """The distribution of a source tree (its pyproject.toml and packages)."""
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    files: dict[str, bytes] = {}
    for package in PACKAGES:
        for path in sorted((source / package).rglob("*")):
            if "__pycache__" not in path.parts and path.is_file() and path.suffix in SUFFIXES:
                files[path.relative_to(source).as_posix()] = path.read_bytes()
    scripts = "\n".join(f"{k} = {v}" for k, v in project.get("scripts", {}).items())
    return Distribution(project["name"], project["version"], metadata(project),
                        f"[console_scripts]\n{scripts}\n", files)


def from_installed(name: str = DISTRIBUTION) -> Distribution:
    """The distribution as installed (from a wheel: no source tree), its metadata as it came."""
    dist = importlib.metadata.distribution(name)
    files = {f.as_posix(): f.read_binary() for f in dist.files or ()
             if f.parts and f.parts[0] in PACKAGES and f.suffix in SUFFIXES}
    if not files:
        raise FileNotFoundError(f"the installed {name} distribution lists none of its package files "
                                "(an editable install without its source tree?)")
    return Distribution(dist.metadata["Name"], dist.version, dist.read_text("METADATA") or "",
                        dist.read_text("entry_points.txt") or "", files)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_wheel(dist: Distribution, out_dir: Path) -> Path:
    """Write `<name>-<version>-py3-none-any.whl` of `dist` into `out_dir`."""
    dist_info = f"{dist.name}-{dist.version}.dist-info"
    files = dict(dist.files)
    files[f"{dist_info}/METADATA"] = dist.metadata.encode()
    files[f"{dist_info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: cumulus\nRoot-Is-Purelib: true\n"
                                   b"Tag: py3-none-any\n")
    files[f"{dist_info}/entry_points.txt"] = dist.entry_points.encode()
    record = [_record_line(n, d) for n, d in files.items()] + [f"{dist_info}/RECORD,,"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, d in files.items():
            zf.writestr(zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0)), d)
        zf.writestr(zipfile.ZipInfo(f"{dist_info}/RECORD", date_time=(1980, 1, 1, 0, 0, 0)),
                    "\n".join(record) + "\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{dist.name}-{dist.version}-py3-none-any.whl"
    tmp = wheel.with_suffix(".part")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(wheel)
    return wheel


def build_wheel(source: Path, out_dir: Path) -> Path:
    """The wheel of a source tree, written into `out_dir`."""
    return write_wheel(from_source(source), out_dir)


def requirements(meta: str, extra: str) -> tuple[str, ...]:
    """What the distribution of `meta` (METADATA text) needs with `extra`, its own extras expanded
    (`cumulus[agent]` inside another extra), each pinned to the version installed here (left as
    written when it is not installed)."""
    reqs, name = [], ""
    for line in meta.splitlines():
        key, _, value = line.partition(":")
        if key == "Name":
            name = value.strip()
        elif key == "Requires-Dist":
            try:
                reqs.append(Requirement(value.strip()))
            except InvalidRequirement:
                continue
    out: list[str] = []

    def add(wanted: str, seen: frozenset[str]) -> None:
        for req in reqs:
            if req.marker is not None and not req.marker.evaluate({"extra": wanted}):
                continue
            if req.marker is None and wanted != "":
                continue  # a base dependency: added once, with the empty extra
            if req.name == name:
                for inner in req.extras - seen:
                    add(inner, seen | {inner})
                continue
            try:
                out.append(f"{req.name}=={importlib.metadata.version(req.name)}")
            except importlib.metadata.PackageNotFoundError:
                out.append(str(req))

    add("", frozenset())
    add(extra, frozenset({extra}))
    return tuple(dict.fromkeys(out))


class AgentPackage:
    """Builds the wheel of what this control plane runs, once, on first use, and caches it."""

    def __init__(self, out_dir: Path, source: Path = SOURCE) -> None:
        self.out_dir = out_dir
        self.source = source
        self._lock = threading.Lock()
        self._dist: Distribution | None = None
        self._wheel: Path | None = None

    def distribution(self) -> Distribution:
        """The source tree's distribution, or the installed one when there is no source tree."""
        with self._lock:
            if self._dist is None:
                tree = (self.source / "pyproject.toml").exists()
                self._dist = from_source(self.source) if tree else from_installed()
            return self._dist

    def wheel(self) -> Path:
        """The wheel's path, building it on first use."""
        dist = self.distribution()
        with self._lock:
            if self._wheel is None or not self._wheel.exists():
                self._wheel = write_wheel(dist, self.out_dir)
                log.info("event=agent_package_built path=%s", self._wheel)
            return self._wheel

    def requirements(self, extra: str = "agent") -> tuple[str, ...]:
        """What `cumulus[extra]` needs beyond the package itself, pinned to what runs here (a VM
        image installs exactly these for the agent)."""
        return requirements(self.distribution().metadata, extra)
