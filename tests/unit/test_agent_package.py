"""The agent package: the wheel nodes install, with its extras, built the same from a source tree
and from a control plane installed from a wheel (no source tree at all, as on a cloud VM)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from control_plane.fleet.agent_package import SOURCE, AgentPackage, build_wheel

AGENT = {"aiohttp", "pydantic", "pydantic-settings", "docker", "uvloop"}


def _names(reqs: tuple[str, ...]) -> set[str]:
    return {r.partition("==")[0] for r in reqs}


def test_the_extras_pin_what_each_part_needs(tmp_path: Path) -> None:
    package = AgentPackage(tmp_path)
    agent = package.requirements("agent")
    assert _names(agent) == AGENT and all("==" in r for r in agent)
    control_plane = _names(package.requirements("control-plane"))
    assert control_plane > AGENT and {"fastapi", "sqlmodel", "boto3", "packaging"} <= control_plane


def test_an_installed_control_plane_serves_the_same_wheel(tmp_path: Path) -> None:
    from_tree = build_wheel(SOURCE, tmp_path / "tree")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--disable-pip-version-check", "--target", str(site), str(from_tree)], check=True,
                   timeout=300)
    probe = f"""
import json, sys
from pathlib import Path
from control_plane.fleet.agent_package import SOURCE, AgentPackage
assert not (SOURCE / "pyproject.toml").exists(), SOURCE
package = AgentPackage(Path({str(tmp_path / "served")!r}))
print(json.dumps({{"source": str(SOURCE), "wheel": str(package.wheel()),
                  "agent": package.requirements("agent")}}))
"""
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120,
                         check=True, cwd=tmp_path)
    served = json.loads(out.stdout)
    assert served["source"].startswith(str(site))
    assert served["agent"] == list(AgentPackage(tmp_path / "again").requirements("agent"))
    with zipfile.ZipFile(from_tree) as a, zipfile.ZipFile(served["wheel"]) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())
        for name in a.namelist():
            if not name.endswith(("RECORD", "METADATA")):  # pip may rewrite RECORD; METADATA below
                assert a.read(name) == b.read(name), name
        requires = [line for line in b.read("cumulus-0.1.0.dist-info/METADATA").decode().splitlines()
                    if line.startswith(("Requires-Dist", "Provides-Extra"))]
        assert requires == [line for line in a.read("cumulus-0.1.0.dist-info/METADATA").decode().splitlines()
                            if line.startswith(("Requires-Dist", "Provides-Extra"))]
