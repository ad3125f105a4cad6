"""The rooms' import contracts hold, and break loudly: a forbidden import fails `lint-imports` with the
offending import named. The agent extra covers every package the node agent imports."""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import grimp
import pytest
from packaging.requirements import Requirement

from control_plane.fleet.agent_package import PACKAGES, build_wheel

REPO = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def _copy_tree(dest: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(REPO / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}, check=False)


def test_the_contracts_hold() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "contract", "named"), [
    ("control_plane/gateway/gateway.py", "from control_plane.store import Store",
     "The gateway never imports the store", "control_plane.gateway.gateway -> control_plane.store"),
    ("control_plane/store/nodes.py", "from control_plane.fleet import Fleet",
     "Layers inside the control plane", "control_plane.store.nodes -> control_plane.fleet"),
    ("provisioners/qemu/image.py", "from node_agent.image import DEFAULT_RECIPE",
     "Top-level rooms", "provisioners.qemu.image -> node_agent.image"),
    ("control_plane/fleet/nodes.py", "import sqlalchemy",
     "Only the store talks SQL", "control_plane.fleet.nodes -> sqlalchemy"),
    ("control_plane/api/deps.py", "from control_plane.gateway.pools import Instance",
     "control_plane.gateway is used through its __init__",
     "control_plane.api.deps -> control_plane.gateway.pools"),
    ("placement/fleet.py", "import aiohttp", "Placement is pure", "placement.fleet -> aiohttp"),
])
def test_a_forbidden_import_breaks_its_contract_and_is_named(tmp_path: Path, module: str, line: str,
                                                             contract: str, named: str) -> None:
    tree = _copy_tree(tmp_path)
    path = tree / module
    text = path.read_text()
    anchor = "from __future__ import annotations\n"
    path.write_text(text.replace(anchor, anchor + line + "  # noqa\n", 1))
    result = _lint(tree)
    assert result.returncode != 0
    broken = [block for block in result.stdout.split("\n\n") if contract in block and "BROKEN" in block]
    assert broken, result.stdout
    assert named in result.stdout, result.stdout


def test_the_agent_extra_covers_what_the_node_agent_imports(tmp_path: Path) -> None:
    graph = grimp.build_graph("node_agent", include_external_packages=True)
    external = {m for m in graph.modules if graph.is_module_squashed(m)}
    imported = {m for m in external if graph.find_modules_that_directly_import(m)}
    imported -= {*sys.stdlib_module_names, "cumulus_wire"}  # the shim's own module, inside a container
    wheel = build_wheel(REPO, tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        meta = email.parser.Parser().parsestr(zf.read("cumulus-0.1.0.dist-info/METADATA").decode())
    requirements = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    agent = {r.name for r in requirements if r.marker is not None and r.marker.evaluate({"extra": "agent"})}
    module_of = {"pydantic-settings": "pydantic_settings"}
    assert imported <= {module_of.get(name, name) for name in agent} | {"pydantic_core"}, imported
    assert not agent & {"fastapi", "sqlmodel", "uvicorn", "boto3", "apache-libcloud", "paramiko", "alembic",
                        "matplotlib", "typer"}, agent
