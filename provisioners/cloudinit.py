"""Node bootstrap as a shell script: cloud-init user data (aws, libcloud) or a script run over SSH.

The format is a `#!/bin/bash` script, which cloud-init runs once as root on first boot (the same
text can be piped to `sudo bash -s` over SSH for clouds without user data). For Debian 12 it:

1. installs `docker.io` and `python3-venv` (and `mmdebstrap` when no runtime image is given: the
   agent then builds the image from Debian's mirror itself), and starts Docker;
2. creates a venv at `/opt/cumulus` and `pip install`s the agent package with its `agent` extra
   (the node agent's dependencies only, not the control plane's);
3. writes `/etc/cumulus/agent.json` (mode 0600: it holds the join token) with the fields of
   `node_agent.settings.AgentSettings`; `advertise_url` is either given or discovered at boot from
   the cloud's metadata service (EC2-style `local-ipv4`), falling back to the first address of
   `hostname -I`;
4. installs, enables and starts `cumulus-agent.service`
   (`/opt/cumulus/bin/python -m node_agent --config /etc/cumulus/agent.json`).

The script never echoes its secrets (no `set -x`; the token only appears inside a quoted heredoc
that is written to a 0600 file). Note that any process on the instance can read user data from the
metadata service: the join token is single-use and expiring for that reason.
"""

from __future__ import annotations

import json
import re
import shlex

from provisioners.base import NodeBootstrap

CONFIG_PATH = "/etc/cumulus/agent.json"
ENV_PATH = "/etc/cumulus/agent.env"
VENV = "/opt/cumulus"
DATA_DIR = "/var/lib/cumulus-agent"
UNIT_NAME = "cumulus-agent.service"
EC2_METADATA_URL = "http://169.254.169.254"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_UNIT = f"""[Unit]
Description=Cumulus node agent
Wants=network-online.target
After=network-online.target docker.service
Requires=docker.service

[Service]
EnvironmentFile=-{ENV_PATH}
ExecStart={VENV}/bin/python -m node_agent --config {CONFIG_PATH}
Restart=always
RestartSec=5
KillSignal=SIGTERM
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
"""


def agent_requirement(package: str) -> str:
    """What pip installs on a node: the Cumulus package at `package` (a URL or a local wheel) with
    the `agent` extra, so the node gets the agent's dependencies and none of the control plane's."""
    return f"cumulus[agent] @ {package}" if "://" in package else f"{package}[agent]"


def agent_config(bootstrap: NodeBootstrap, *, provider: str, advertise_url: str = "") -> dict[str, object]:
    """The JSON config of the node agent (fields of `AgentSettings`) for this bootstrap."""
    return {
        "control_plane_url": bootstrap.control_plane_url,
        "join_token": bootstrap.join_token,
        "listen_host": "0.0.0.0",
        "listen_port": bootstrap.agent_port,
        "advertise_url": advertise_url,
        "data_dir": DATA_DIR,
        "image": bootstrap.runtime_image,
        "provider": provider,
        "node_type": bootstrap.node_type,
    }


def _systemd_env_line(name: str, value: str) -> str:
    if not _ENV_NAME.match(name):
        raise ValueError(f"invalid environment variable name {name!r}")
    if "\n" in value or "\r" in value:
        raise ValueError(f"environment variable {name} must be one line")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}="{escaped}"'


def _heredoc(path: str, content: str, mode: str, marker: str) -> str:
    if any(line == marker for line in content.splitlines()):
        raise ValueError(f"content of {path} contains the heredoc marker {marker}")
    body = content if content.endswith("\n") else content + "\n"
    return (f"install -m {mode} /dev/null {shlex.quote(path)}\n"
            f"cat > {shlex.quote(path)} <<'{marker}'\n{body}{marker}\n")


def render_user_data(bootstrap: NodeBootstrap, *, provider: str, advertise_url: str | None = None,
                     metadata_url: str = EC2_METADATA_URL) -> str:
    """The bootstrap script for a Debian 12 node joining with `bootstrap`.

    `provider` is recorded in the agent's config. `advertise_url` is how the control plane reaches
    the agent; `None` discovers it at boot from `metadata_url` (EC2 IMDSv2, then IMDSv1, then
    `hostname -I`) as `http://<address>:<agent_port>`. Pure: the same input gives the same text.
    Raises `ValueError` when the bootstrap cannot be rendered (no agent package, bad env names).
    """
    if not bootstrap.agent_package:
        raise ValueError("a cloud node needs NodeBootstrap.agent_package (a pip-installable URL)")
    if not bootstrap.join_token:
        raise ValueError("a cloud node needs NodeBootstrap.join_token")
    # iptables and busybox-static: functions' egress rules, image functions' start gate.
    packages = ["docker.io", "python3-venv", "curl", "ca-certificates", "iptables", "iproute2",
                "busybox-static"]
    if not bootstrap.runtime_image:
        packages.append("mmdebstrap")
    config = json.dumps(agent_config(bootstrap, provider=provider, advertise_url=advertise_url or ""),
                        indent=2, sort_keys=True)
    env = "".join(_systemd_env_line(k, v) + "\n" for k, v in sorted(bootstrap.extra_env.items()))
    discover = ""
    if advertise_url is None:
        meta = shlex.quote(metadata_url.rstrip("/"))
        discover = f"""
# advertise_url from the cloud's metadata service (IMDSv2, then v1), else the first local address
imds_token=$(curl -fsS -m 3 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' \\
  {meta}/latest/api/token 2>/dev/null || true)
addr=$(curl -fsS -m 3 ${{imds_token:+-H "X-aws-ec2-metadata-token: $imds_token"}} \\
  {meta}/latest/meta-data/local-ipv4 2>/dev/null || true)
case "$addr" in *[!0-9a-fA-F.:]*|'') addr=$(hostname -I | awk '{{print $1}}') ;; esac
CUMULUS_ADVERTISE_URL="http://$addr:{int(bootstrap.agent_port)}" {VENV}/bin/python - <<'PY'
import json, os
path = "{CONFIG_PATH}"
with open(path) as f:
    cfg = json.load(f)
cfg["advertise_url"] = os.environ["CUMULUS_ADVERTISE_URL"]
with open(path + ".tmp", "w") as f:
    json.dump(cfg, f, indent=2, sort_keys=True)
os.chmod(path + ".tmp", 0o600)
os.replace(path + ".tmp", path)
PY
"""
    config_files = (_heredoc(CONFIG_PATH, config, "0600", "CUMULUS_AGENT_JSON")
                    + _heredoc(ENV_PATH, env, "0600", "CUMULUS_AGENT_ENV"))
    unit_file = _heredoc("/etc/systemd/system/" + UNIT_NAME, _UNIT, "0644", "CUMULUS_AGENT_UNIT")
    return f"""#!/bin/bash
# Cumulus node bootstrap (generated by provisioners.cloudinit; Debian 12). Runs once as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
log() {{ echo "cumulus-bootstrap: $*"; }}

log "event=packages"
for attempt in 1 2 3 4 5; do
  if apt-get update -q && apt-get install -y -q {' '.join(packages)}; then break; fi
  if [ "$attempt" = 5 ]; then log "event=packages_failed"; exit 1; fi
  sleep 10
done
systemctl enable --now docker

log "event=agent_install"
python3 -m venv {VENV}
{VENV}/bin/pip install --quiet --upgrade pip
{VENV}/bin/pip install --quiet {shlex.quote(agent_requirement(bootstrap.agent_package))}

log "event=agent_config"
install -d -m 0700 /etc/cumulus
install -d -m 0700 {DATA_DIR}
{config_files}{discover}
{unit_file}
systemctl daemon-reload
systemctl enable --now {UNIT_NAME}
log "event=agent_started"
"""
