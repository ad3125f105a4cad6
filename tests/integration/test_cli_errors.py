"""`cumulus up` refuses bad settings with a readable message and exit status 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, free_port

pytestmark = pytest.mark.docker


def _up(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "control_plane.cli", "up", "--data-dir", str(tmp_path / "d"),
                           "--port", str(free_port()), "--no-example", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize(("args", "message"), [
    (("--provider", "nope"), "unknown provider 'nope'; choose one of aws, libcloud, local, qemu"),
    (("--provider", "aws"), "the aws provider needs [[node_types]] in a config file"),
])
def test_bad_provider(tmp_path: Path, docker_engine: None, args: tuple[str, ...], message: str) -> None:
    out = _up(tmp_path, *args)
    assert out.returncode == 1 and message in out.stderr, out.stderr


def test_bad_config_file(tmp_path: Path, docker_engine: None) -> None:
    (tmp_path / "bad.toml").write_text("[cumulus\n")
    out = _up(tmp_path, "--config", str(tmp_path / "bad.toml"))
    assert out.returncode == 1 and "cannot read config" in out.stderr
    (tmp_path / "odd.toml").write_text("[surprise]\nx = 1\n")
    out = _up(tmp_path, "--config", str(tmp_path / "odd.toml"))
    assert out.returncode == 1 and "unknown sections ['surprise']" in out.stderr
