"""The cloud-init bootstrap script: renders, parses as bash, and carries the agent's settings."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from node_agent.settings import AgentSettings
from provisioners.base import NodeBootstrap
from provisioners.cloudinit import CONFIG_PATH, UNIT_NAME, agent_config, render_user_data

BOOT = NodeBootstrap(control_plane_url="http://10.0.0.1:8080", join_token="tok-s3cret",
                     agent_package="https://cp.example/cumulus-0.1.0-py3-none-any.whl", agent_port=8181,
                     node_type="small")


def heredoc(script: str, marker: str) -> str:
    """The body of the quoted heredoc `marker` in `script`."""
    match = re.search(rf"<<'{marker}'\n(.*?)\n{marker}\n", script, re.S)
    assert match, f"no heredoc {marker}"
    return match.group(1)


def bash_parses(script: str, tmp_path: Path) -> None:
    path = tmp_path / "user-data.sh"
    path.write_text(script)
    bash = shutil.which("bash")
    assert bash
    proc = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr


def test_script_parses_and_installs_starts_the_agent(tmp_path: Path) -> None:
    script = render_user_data(BOOT, provider="aws")
    bash_parses(script, tmp_path)
    assert script.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in script
    assert "set -x" not in script
    assert "apt-get install -y -q docker.io python3-venv" in script
    assert "systemctl enable --now docker" in script
    assert "python3 -m venv /opt/cumulus" in script
    # the agent's extra only: a node installs none of the control plane's dependencies
    assert ("/opt/cumulus/bin/pip install --quiet "
            "'cumulus[agent] @ https://cp.example/cumulus-0.1.0-py3-none-any.whl'") in script
    assert f"systemctl enable --now {UNIT_NAME}" in script
    unit = heredoc(script, "CUMULUS_AGENT_UNIT")
    assert f"ExecStart=/opt/cumulus/bin/python -m node_agent --config {CONFIG_PATH}" in unit
    assert "WantedBy=multi-user.target" in unit


def test_config_holds_the_agent_settings(tmp_path: Path) -> None:
    config = json.loads(heredoc(render_user_data(BOOT, provider="libcloud"), "CUMULUS_AGENT_JSON"))
    assert config == agent_config(BOOT, provider="libcloud")
    assert config["control_plane_url"] == "http://10.0.0.1:8080"
    assert config["join_token"] == "tok-s3cret"
    assert config["listen_host"] == "0.0.0.0"
    assert config["listen_port"] == 8181
    assert config["data_dir"] == "/var/lib/cumulus-agent"
    assert config["provider"] == "libcloud"
    assert config["node_type"] == "small"
    # Every key is an AgentSettings field; join_token is the one the join flow adds (issue 4).
    assert set(config) - set(AgentSettings.model_fields) <= {"join_token"}


def test_written_config_is_private() -> None:
    script = render_user_data(BOOT, provider="aws")
    assert f"install -m 0600 /dev/null {CONFIG_PATH}\ncat > {CONFIG_PATH} <<'CUMULUS_AGENT_JSON'" in script
    assert "install -d -m 0700 /etc/cumulus" in script
    # the token appears once: inside the config heredoc, never on a command line
    assert script.count("tok-s3cret") == 1


def test_no_runtime_image_means_the_node_builds_it() -> None:
    built = render_user_data(BOOT, provider="aws")
    assert "mmdebstrap" in built
    assert json.loads(heredoc(built, "CUMULUS_AGENT_JSON"))["image"] == ""
    pulled = render_user_data(NodeBootstrap(**{**_fields(BOOT), "runtime_image": "reg.example/py:3.11"}),
                              provider="aws")
    assert "mmdebstrap" not in pulled
    assert json.loads(heredoc(pulled, "CUMULUS_AGENT_JSON"))["image"] == "reg.example/py:3.11"


def test_advertise_url_given_or_discovered(tmp_path: Path) -> None:
    discovered = render_user_data(BOOT, provider="aws")
    assert "169.254.169.254/latest/meta-data/local-ipv4" in discovered
    assert 'CUMULUS_ADVERTISE_URL="http://$addr:8181"' in discovered
    given = render_user_data(BOOT, provider="aws", advertise_url="http://node1:8181")
    bash_parses(given, tmp_path)
    assert "169.254.169.254" not in given
    assert json.loads(heredoc(given, "CUMULUS_AGENT_JSON"))["advertise_url"] == "http://node1:8181"


def test_advertise_patch_rewrites_the_config(tmp_path: Path) -> None:
    """The embedded Python that sets advertise_url at boot really works (run against a temp file)."""
    script = render_user_data(BOOT, provider="aws")
    patch = heredoc(script, "PY").replace(CONFIG_PATH, str(tmp_path / "agent.json"))
    (tmp_path / "agent.json").write_text(heredoc(script, "CUMULUS_AGENT_JSON"))
    python = shutil.which("python3")
    assert python
    subprocess.run([python, "-c", patch], check=True, timeout=10,
                   env={"CUMULUS_ADVERTISE_URL": "http://10.1.2.3:8181"})
    config = json.loads((tmp_path / "agent.json").read_text())
    assert config["advertise_url"] == "http://10.1.2.3:8181"
    assert config["join_token"] == "tok-s3cret"
    assert (tmp_path / "agent.json").stat().st_mode & 0o777 == 0o600


def test_extra_env_is_quoted_for_systemd() -> None:
    boot = NodeBootstrap(**{**_fields(BOOT), "extra_env": {"B": 'say "hi" \\ there', "A": "1"}})
    env = heredoc(render_user_data(boot, provider="aws"), "CUMULUS_AGENT_ENV")
    assert env.splitlines() == ['A="1"', 'B="say \\"hi\\" \\\\ there"']


def test_hostile_package_string_is_quoted(tmp_path: Path) -> None:
    boot = NodeBootstrap(**{**_fields(BOOT), "agent_package": "x; touch /tmp/pwned"})
    script = render_user_data(boot, provider="aws")
    bash_parses(script, tmp_path)
    assert "pip install --quiet 'x; touch /tmp/pwned[agent]'" in script


@pytest.mark.parametrize("change, message", [
    ({"agent_package": ""}, "agent_package"),
    ({"join_token": ""}, "join_token"),
    ({"extra_env": {"BAD-NAME": "x"}}, "invalid environment variable"),
    ({"extra_env": {"OK": "two\nlines"}}, "one line"),
])
def test_bad_bootstrap_is_a_value_error(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_user_data(NodeBootstrap(**{**_fields(BOOT), **change}), provider="aws")  # type: ignore[arg-type]


def test_render_is_pure() -> None:
    assert render_user_data(BOOT, provider="aws") == render_user_data(BOOT, provider="aws")


def _fields(boot: NodeBootstrap) -> dict[str, object]:
    return {name: getattr(boot, name) for name in boot.__dataclass_fields__}


def test_the_node_asks_pip_for_the_agent_extra_only() -> None:
    from packaging.requirements import Requirement

    from provisioners.cloudinit import agent_requirement

    url = "https://cp.example/v1/agent/package/cumulus-0.1.0-py3-none-any.whl"
    req = Requirement(agent_requirement(url))
    assert (req.name, req.extras, req.url) == ("cumulus", {"agent"}, url)
    wheel = "/tmp/cumulus-0.1.0-py3-none-any.whl"
    assert agent_requirement(wheel) == f"{wheel}[agent]"
