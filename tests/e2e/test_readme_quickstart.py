"""The README's quick start, run for real from a clean clone: `make up` deploys hello, the printed
command invokes it, Ctrl-C stops everything. (`make test`, the other command, is what CI runs.)"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, containers_of, free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.docker]


def test_make_up_from_a_clean_clone_deploys_and_answers(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    readme = (clone / "README.md").read_text()
    assert "make up" in readme and "make test" in readme
    data_dir = tmp_path / "data"
    port = free_port()
    out = (tmp_path / "up.out").open("wb")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CUMULUS_DATA_DIR", "CUMULUS_URL",
                                                           "CUMULUS_TOKEN")}
    proc = subprocess.Popen(["make", "up", f"ARGS=--port {port} --data-dir {data_dir}"], cwd=clone, env=env,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError("make up exited:\n" + (tmp_path / "up.out").read_text())
            return "Press Ctrl-C" in (tmp_path / "up.out").read_text()

        wait_for(ready, 900, interval=1, what="make up")
        text = (tmp_path / "up.out").read_text()
        assert "deployed hello" in text and "Hello, Cumulus!" in text
        assert f"http://127.0.0.1:{port}/v1/functions/hello/invoke" in text
        command = next(line.strip() for line in text.splitlines() if re.search(r"cumulus invoke hello", line))
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120, env=env,
                                check=False)
        assert result.returncode == 0, result.stderr
        assert '"message": "Hello, you!"' in result.stdout
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert "Cumulus stopped." in (tmp_path / "up.out").read_text()
    wait_for(lambda: not containers_of("hello"), 30, what="hello's containers to be removed")
    assert not list((data_dir / "nodes").glob("*/node.json")), "node agents left behind"
