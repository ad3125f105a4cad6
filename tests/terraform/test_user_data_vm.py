"""The control plane's user data, run for real: a fresh Debian 12 VM of the qemu provider's image runs
the script exactly as `templatefile` renders it, and the control plane must come up as a systemd
service answering `GET /healthz` with the config it was given.

What stands in for AWS, so that nothing leaves this machine:
- Cumulus is installed from a wheel of this repo, and its dependencies from a wheelhouse, both served
  from the host (10.0.2.2 inside QEMU's user network) with `--no-index`: the `cumulus_source` and
  `pip_extra_args` variables.
- `apt_packages` lists only what the image already has (the script installs missing packages only),
  and the function runtime image's rootfs is already in the image's cache folder, so neither apt nor
  mmdebstrap needs a mirror.
- `control_plane_url` is given, so the script skips the metadata service.
- EC2 and SSM are a moto server on the host: credentials and `AWS_ENDPOINT_URL` come from the
  environment of the script (for the SSM upload of the admin token) and from a systemd drop-in (for
  the control plane's aws provider, which lists its nodes from the start). On EC2 both come from the
  instance profile instead.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import shlex
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from contract.motoserver import MotoServer
from terraform_module import bootstrap_document, render_user_data

pytestmark = [pytest.mark.vm, pytest.mark.timeout(2400)]

GUEST_HOST = "10.0.2.2"  # the host, seen from inside QEMU's user-mode network
GUEST_ADDRESS = "10.0.2.15"
API_PORT = 8090  # not the default: the test checks the port variable is honoured
CLUSTER = "tfvm"
PIP_PLATFORM = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
                "--abi", "cp311", "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
                "--platform", "manylinux_2_28_x86_64", "--platform", "linux_x86_64"]


def _wheelhouse(dest: Path) -> Path:
    """A wheel of this repo plus wheels of all its dependencies for the guest (Debian 12, CPython
    3.11), pinned to the versions installed here; the dependencies are cached by their pins."""
    from control_plane.fleet.agent_package import SOURCE, build_wheel
    from node_agent.image import default_cache_dir

    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True, timeout=120).stdout
    pins = "".join(line + "\n" for line in freeze.splitlines()
                   if "==" in line and not line.startswith(("-e", "cumulus==")))
    project = (SOURCE / "pyproject.toml").read_bytes()
    key = hashlib.sha256(pins.encode() + project).hexdigest()[:16]
    cached = default_cache_dir() / "terraform-wheelhouse" / key
    wheel = build_wheel(SOURCE, dest / "cumulus-wheel")
    if not (cached / ".complete").exists():
        work = cached.with_name(f".{key}.{time.monotonic_ns()}")
        work.mkdir(parents=True)
        (work / "constraints.txt").write_text(pins)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        *PIP_PLATFORM, "-c", str(work / "constraints.txt"), "--dest", str(work),
                        f"cumulus[control-plane] @ {wheel.as_uri()}"],
                       check=True, timeout=900)
        (work / ".complete").touch()
        if cached.exists():
            shutil.rmtree(work)
        else:
            work.rename(cached)
    house = dest / "wheelhouse"
    house.mkdir()
    for path in cached.glob("*.whl"):
        if not path.name.startswith("cumulus-"):
            (house / path.name).symlink_to(path)
    shutil.copy(wheel, house / wheel.name)
    return house


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder without a log line per request."""

    def log_message(self, format: str, *args: Any) -> None:
        """Drop the access log."""


@pytest.fixture(scope="module")
def wheel_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """The wheelhouse over HTTP on 127.0.0.1 (the guest's 10.0.2.2)."""
    house = _wheelhouse(tmp_path_factory.mktemp("wheels"))
    handler = functools.partial(_QuietHandler, directory=str(house))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield house, int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A fresh VM of the qemu provider's image, SSH connected as root; stopped afterwards."""
    from provisioners import ssh
    from provisioners.base import ProviderError
    from provisioners.qemu import bootstrap as boot
    from provisioners.qemu.image import ensure_vm_image
    from provisioners.qemu.vm import VmShape, detect_accel, require_qemu, start_vm, stop_vm

    try:
        require_qemu()
    except ProviderError as exc:
        pytest.fail(str(exc))
    from helpers import guest_software

    from node_agent.image import default_cache_dir

    image = ensure_vm_image(default_cache_dir(), guest_software(tmp_path_factory.mktemp("agent-package")))
    workdir = tmp_path_factory.mktemp("vm")
    accel = detect_accel(image, default_cache_dir())
    running = start_vm(image, workdir, VmShape(memory_mib=2048, cpus=1), accel=accel,
                       agent_guest_port=API_PORT)
    client = None
    try:
        known_hosts = workdir / "known_hosts"
        boot.write_known_hosts(known_hosts, image, running.ssh_port)
        settings = boot.ssh_settings(image, known_hosts, ready_timeout_s=3.0)
        deadline = time.monotonic() + 300
        while client is None:
            try:
                client = ssh.connect("127.0.0.1", settings, port=running.ssh_port)
            except ssh.SshError:
                if time.monotonic() > deadline:
                    raise
        yield {"ssh": client, "api_port": running.agent_port, "console": running.console_log}
    finally:
        if client is not None:
            client.close()
        stop_vm(running.pid, running.overlay)


def _sh(vm: dict[str, Any], command: str, timeout_s: float = 120) -> str:
    from provisioners import ssh

    result = ssh.run(vm["ssh"], command, timeout_s=timeout_s)
    assert result.exit_status == 0, f"{command} exited {result.exit_status}:\n{result.output[-3000:]}"
    return result.output


def _get(url: str, token: str = "") -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200
        return json.loads(reply.read())


def test_user_data_brings_up_the_control_plane(vm: dict[str, Any], wheel_server: tuple[Path, int],
                                               moto_server: MotoServer) -> None:
    import boto3

    from control_plane.core import Settings, load_config

    house, port = wheel_server
    wheel = next(house.glob("cumulus-*.whl")).name
    served = f"http://{GUEST_HOST}:{port}"
    public_url = f"http://{GUEST_ADDRESS}:{API_PORT}"
    token_parameter = f"/cumulus/{CLUSTER}/admin-token"
    doc = bootstrap_document(
        cluster_name=CLUSTER, region=moto_server.region, min_nodes=0, max_nodes=2,
        cumulus_source=f"{served}/{wheel}",
        pip_extra_args=["--no-index", "--find-links", f"{served}/", "--trusted-host", GUEST_HOST,
                        "--no-compile"],
        apt_packages=["ca-certificates", "python3-venv", "docker.io"],
        api_port=API_PORT, control_plane_url=public_url, admin_token_parameter=token_parameter)
    script = render_user_data(doc)

    aws_env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_ENDPOINT_URL": f"http://{GUEST_HOST}:{moto_server.port}",
               "AWS_EC2_METADATA_DISABLED": "true"}
    dropin = "[Service]\n" + "".join(f"Environment={k}={v}\n" for k, v in aws_env.items())
    from provisioners import ssh

    ssh.put_bytes(vm["ssh"], script.encode(), "/root/user-data.sh", mode=0o700)
    _sh(vm, "mkdir -p /etc/systemd/system/cumulus.service.d")
    ssh.put_bytes(vm["ssh"], dropin.encode(), "/etc/systemd/system/cumulus.service.d/10-moto.conf",
                  mode=0o644)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in aws_env.items())
    t0 = time.monotonic()
    output = _sh(vm, f"env {env} bash /root/user-data.sh 2>&1 | tee /var/log/cumulus-user-data.log; "
                     "exit ${PIPESTATUS[0]}", timeout_s=1800)
    took = time.monotonic() - t0
    print(f"user data ran in {took:.0f}s:\n{output[-1500:]}")
    assert "event=ready" in output

    # A systemd service, enabled for the next boot, running `cumulus up` as the module says.
    assert _sh(vm, "systemctl is-active cumulus.service").strip() == "active"
    assert _sh(vm, "systemctl is-enabled cumulus.service").strip() == "enabled"
    exec_start = _sh(vm, "systemctl show -p ExecStart --value cumulus.service")
    assert ("argv[]=/opt/cumulus/bin/cumulus up --config /etc/cumulus/cumulus.toml --host 0.0.0.0 "
            f"--port {API_PORT} --data-dir /var/lib/cumulus --no-example --keep-nodes") in exec_start

    # Reachable from outside the VM, through the forwarded port.
    assert _get(f"http://127.0.0.1:{vm['api_port']}/healthz") == {"status": "ok"}

    # With the config it was given.
    config_text = _sh(vm, "cat /etc/cumulus/cumulus.toml")
    assert _sh(vm, "stat -c %a /etc/cumulus/cumulus.toml").strip() == "600"
    config_path = Path(vm["console"]).with_name("cumulus.toml")
    config_path.write_text(config_text)
    file = load_config(config_path)
    settings = Settings(**file.settings)
    assert (settings.cluster, settings.provider) == (CLUSTER, "aws")
    assert (settings.min_nodes, settings.max_nodes) == (0, 2)
    assert settings.public_url == public_url and settings.db == ""
    assert [t.name for t in file.node_types] == ["small"]
    assert file.providers["aws"]["region"] == moto_server.region
    assert tomllib.loads(config_text)["provider"]["aws"]["instance_types"] == {"small": "t3.small"}
    assert _sh(vm, "cat /var/lib/cumulus/endpoint").strip() == public_url

    # The admin token went to SSM (moto), and it opens the API; the aws provider listed its nodes
    # through moto without an error.
    ssm = boto3.client("ssm", region_name=moto_server.region, endpoint_url=moto_server.endpoint_url)
    token = ssm.get_parameter(Name=token_parameter, WithDecryption=True)["Parameter"]["Value"]
    assert token == _sh(vm, "cat /var/lib/cumulus/admin.token").strip()
    assert _get(f"http://127.0.0.1:{vm['api_port']}/v1/nodes", token) == []
    events = _get(f"http://127.0.0.1:{vm['api_port']}/v1/events", token)
    assert not [e for e in events if "provider_error" in json.dumps(e)], events

    # Installed from a wheel (no source tree), it still serves new nodes the agent package, whose
    # `agent` extra is all a node installs.
    package = f"http://127.0.0.1:{vm['api_port']}/v1/agent/package/cumulus-0.1.0-py3-none-any.whl"
    with urllib.request.urlopen(package, timeout=60) as resp:
        served = zipfile.ZipFile(io.BytesIO(resp.read()))
    assert "node_agent/__main__.py" in served.namelist()
    assert "Provides-Extra: agent" in served.read("cumulus-0.1.0.dist-info/METADATA").decode()

    # Survives a restart of the service (as on a reboot): same token, same answers.
    _sh(vm, "systemctl restart cumulus.service")
    deadline = time.monotonic() + 300
    while True:
        try:
            assert _get(f"http://127.0.0.1:{vm['api_port']}/v1/nodes", token) == []
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
