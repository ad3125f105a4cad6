"""The control plane's user data, rendered as `templatefile` would: valid bash, reading its settings
without shell parsing, and writing a config file that Cumulus loads as given. Also the fleet clean-up
script, against a recording fake `aws` CLI."""

from __future__ import annotations

import base64
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from terraform_module import MODULE, USER_DATA_TEMPLATE, bootstrap_document, render_template, render_user_data

from control_plane.core import Settings, load_config
from provisioners.aws import AwsProvider

HOSTILE = "it's \"ops\" $(touch /tmp/cumulus-pwned) `id` ${HOME} %{ if } \\ é 🚀 <&>"


def _script(**overrides: object) -> str:
    return render_user_data(bootstrap_document(**overrides))  # type: ignore[arg-type]


def test_renderer_matches_templatefile_semantics() -> None:
    assert render_template("a ${x} $${y} %%{ z } b", {"x": "1"}) == "a 1 ${y} %{ z } b"
    for bad in ("${x + 1}", "%{ if x }y%{ endif }", "${missing}"):
        with pytest.raises(ValueError):
            render_template(bad, {"x": "1"})


@pytest.mark.parametrize("overrides", [
    {},
    {"database_url": "postgresql+psycopg://cumulus:pw@db.example:5432/cumulus", "node_key_name": "ops",
     "pip_extra_args": ["--index-url", "https://pypi.example/simple"], "control_plane_url": "http://cp:8080",
     "admin_token_parameter": "", "tags": {"team": HOSTILE}},
])
def test_rendered_user_data_is_valid_bash(overrides: dict[str, object], tmp_path: Path) -> None:
    script = _script(**overrides)
    assert script.startswith("#!/bin/bash\n")
    path = tmp_path / "user-data.sh"
    path.write_text(script)
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "${" not in USER_DATA_TEMPLATE.read_text().replace("$${", "").replace("${bootstrap_json}", "")


def _run_prefix(script: str, workdir: Path) -> dict[str, object]:
    """Run the script up to its first side effect, with /etc/cumulus moved under `workdir`, and
    return the shell variables it read from the bootstrap document."""
    prefix = script.split('log "event=packages"')[0].replace("/etc/cumulus", str(workdir))
    names = ["API_PORT", "SOURCE", "REGION", "PUBLIC_URL", "TOKEN_PARAMETER"]
    dump = "".join(f'printf "%s\\0" "${n}"\n' for n in names)
    dump += 'printf "%s\\0" "${#PIP_ARGS[@]}" "${PIP_ARGS[@]}" "${#APT_PACKAGES[@]}" "${APT_PACKAGES[@]}"\n'
    proc = subprocess.run(["bash", "-c", prefix + dump], capture_output=True, timeout=30, check=False,
                          cwd=workdir, env={"PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr.decode()
    fields = proc.stdout.decode().split("\0")[:-1]
    values: dict[str, object] = dict(zip(names, fields[:len(names)], strict=True))
    rest = fields[len(names):]
    n_pip = int(rest[0])
    values["PIP_ARGS"] = rest[1:1 + n_pip]
    values["APT_PACKAGES"] = rest[2 + n_pip:]
    assert int(rest[1 + n_pip]) == len(values["APT_PACKAGES"])  # type: ignore[arg-type]
    return values


def test_settings_reach_the_shell_unparsed(tmp_path: Path) -> None:
    doc = bootstrap_document(cumulus_source="https://x.example/a b'c$(id).whl", api_port=9090,
                             pip_extra_args=["--index-url", HOSTILE, ""], apt_packages=["docker.io"],
                             control_plane_url=HOSTILE, admin_token_parameter="")
    values = _run_prefix(render_user_data(doc), tmp_path)
    assert values == {"API_PORT": "9090", "SOURCE": doc["cumulus_source"], "REGION": "eu-west-1",
                      "PUBLIC_URL": HOSTILE, "TOKEN_PARAMETER": "", "PIP_ARGS": ["--index-url", HOSTILE, ""],
                      "APT_PACKAGES": ["docker.io"]}
    assert not Path("/tmp/cumulus-pwned").exists()
    assert (tmp_path / "bootstrap.json").stat().st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "bootstrap.json").read_text()) == doc


def test_no_pip_arguments_is_an_empty_list(tmp_path: Path) -> None:
    values = _run_prefix(_script(), tmp_path)
    assert values["PIP_ARGS"] == []
    assert values["TOKEN_PARAMETER"] == "/cumulus/cumulus/admin-token"
    assert values["APT_PACKAGES"] == ["ca-certificates", "python3-venv", "docker.io", "mmdebstrap",
                                      "iptables", "busybox-static", "git"]


def _config_writer(script: str) -> str:
    match = re.search(r'python3 - "\$BOOTSTRAP" "\$CONFIG" <<\'PY\'\n(.*?)\nPY\n', script, re.S)
    assert match is not None, "the config writer is not where the test expects it"
    return match.group(1)


@pytest.mark.parametrize("database_url", ["", "postgresql+psycopg://cumulus:pw@db.example:5432/cumulus"])
def test_written_config_is_what_cumulus_loads(database_url: str, tmp_path: Path) -> None:
    types = [{"name": "small", "instance_type": "t3.small", "cpu_millis": 2000, "memory_mib": 1536,
              "hourly_cost": 0.0208, "boot_s": 90},
             {"name": "large gpu", "instance_type": "g5.xlarge", "cpu_millis": 4000, "memory_mib": 15000,
              "hourly_cost": 1, "boot_s": 120}]
    doc = bootstrap_document(cluster_name="prod-1", region="us-east-2", node_types=types, min_nodes=1,
                             max_nodes=7, database_url=database_url, tags={"team": HOSTILE, "a:b": "c"},
                             node_key_name=None)
    (tmp_path / "bootstrap.json").write_text(json.dumps(doc))
    config = tmp_path / "cumulus.toml"
    proc = subprocess.run(["python3", "-", str(tmp_path / "bootstrap.json"), str(config)],
                          input=_config_writer(_script()), capture_output=True, text=True, timeout=30,
                          check=False, env={**os.environ, "CUMULUS_PUBLIC_URL": "http://10.1.2.3:8080"})
    assert proc.returncode == 0, proc.stderr
    assert config.stat().st_mode & 0o777 == 0o600
    file = load_config(config)
    settings = Settings(**file.settings)
    assert (settings.cluster, settings.provider) == ("prod-1", "aws")
    assert (settings.min_nodes, settings.max_nodes) == (1, 7)
    assert settings.public_url == "http://10.1.2.3:8080"
    assert settings.db == database_url
    assert settings.db_url == (database_url or f"sqlite:///{settings.data_dir / 'cumulus.db'}")
    assert [(t.name, t.capacity.cpu_millis, t.capacity.memory_mib, t.hourly_cost, t.boot_s)
            for t in file.node_types] == [
            ("small", 2000, 1536, 0.0208, 90.0), ("large gpu", 4000, 15000, 1.0, 120.0)]
    aws = file.providers["aws"]
    assert aws == {"region": "us-east-2", "image_id": "ami-0123456789abcdef0",
                   "subnet_id": "subnet-0123456789abcdef0", "security_group_ids": ["sg-0123456789abcdef0"],
                   "instance_types": {"small": "t3.small", "large gpu": "g5.xlarge"},
                   "extra_tags": {"team": HOSTILE, "a:b": "c"}}  # key_name null: left out
    inspect.signature(AwsProvider).bind("prod-1", lambda request_id: None, **aws)


def test_service_runs_cumulus_up_with_the_config() -> None:
    script = _script(api_port=8443)
    unit = script.split("<<CUMULUS_UNIT\n")[1].split("\nCUMULUS_UNIT\n")[0]
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert shlex.split(exec_start.removeprefix("ExecStart=")) == [
        "$VENV/bin/cumulus", "up", "--config", "$CONFIG", "--host", "0.0.0.0", "--port", "$API_PORT",
        "--data-dir", "$DATA_DIR", "--no-example", "--keep-nodes"]
    assert "Requires=docker.service" in unit and "WantedBy=multi-user.target" in unit
    assert 'DATA_DIR=/var/lib/cumulus\n' in script and "CONFIG=/etc/cumulus/cumulus.toml\n" in script


# -- the fleet clean-up ---------------------------------------------------------------------------

FAKE_AWS = """#!/bin/bash
printf '%s\\n' "$*" >> "$AWS_CALLS"
case "$2" in
  describe-instances) cat "$AWS_DESCRIBE_OUTPUT" ;;
esac
"""


@pytest.mark.parametrize("listed", ["i-0aaa\ti-0bbb\n", ""])
def test_terminate_nodes_script(listed: str, tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "aws"
    fake.write_text(FAKE_AWS)
    fake.chmod(0o755)
    (tmp_path / "describe.txt").write_text(listed)
    calls = tmp_path / "calls.txt"
    calls.touch()
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "AWS_CALLS": str(calls),
           "AWS_DESCRIBE_OUTPUT": str(tmp_path / "describe.txt")}
    proc = subprocess.run(["bash", str(MODULE / "scripts" / "terminate-nodes.sh"), "prod-1", "eu-west-1"],
                          capture_output=True, text=True, timeout=30, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = calls.read_text().splitlines()
    assert lines[0].startswith("ec2 describe-instances --region eu-west-1 "
                               "--filters Name=tag:cumulus:cluster,Values=prod-1 ")
    if listed:
        assert lines[1:] == [
            "ec2 terminate-instances --region eu-west-1 --instance-ids i-0aaa i-0bbb --output text",
            "ec2 wait instance-terminated --region eu-west-1 --instance-ids i-0aaa i-0bbb"]
    else:
        assert lines[1:] == []


# -- against Terraform itself, where a binary is on PATH --------------------------------------------

TERRAFORM = shutil.which("terraform")
needs_terraform = pytest.mark.skipif(TERRAFORM is None, reason="no `terraform` binary on PATH")


def _console(expression: str, cwd: Path) -> str:
    """Evaluate one expression with `terraform console` (no providers needed) and decode it; the
    expression must produce a base64 string, so the output needs no HCL unquoting."""
    assert TERRAFORM is not None
    proc = subprocess.run([TERRAFORM, "console"], input=expression + "\n", capture_output=True, text=True,
                          timeout=120, check=False, cwd=cwd,
                          env={**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr
    return base64.b64decode(json.loads(proc.stdout.strip())).decode()


@needs_terraform
def test_renderer_equals_terraforms_templatefile(tmp_path: Path) -> None:
    doc = bootstrap_document(tags={"team": HOSTILE}, pip_extra_args=["--no-index", "--find-links", "x y"])
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    rendered = _console(f'base64encode(templatefile("{USER_DATA_TEMPLATE}", '
                        '{bootstrap_json = jsonencode(jsondecode(file("doc.json")))}))', tmp_path)
    assert rendered == render_user_data(doc)


def _locals_block(text: str) -> str:
    match = re.search(r"^locals \{\n.*?^\}\n", text, re.M | re.S)
    assert match is not None
    return match.group(0)


@needs_terraform
def test_bootstrap_document_equals_terraforms_local(tmp_path: Path) -> None:
    """`local.bootstrap` evaluated by Terraform (resources stubbed) equals the Python twin."""
    stubs = {"aws_security_group.node.id": '"sg-0123456789abcdef0"',
             "data.aws_ami.debian12.id": '"ami-0123456789abcdef0"'}
    block = _locals_block((MODULE / "main.tf").read_text())
    for ref, value in stubs.items():
        block = block.replace(ref, value)
    assert "aws_" not in block.replace('"aws"', "").replace("aws =", ""), "unstubbed resource reference"
    shutil.copy(MODULE / "variables.tf", tmp_path / "variables.tf")
    (tmp_path / "locals.tf").write_text(block + 'locals {\n  database_url = ""\n}\n')
    types = [{"name": "small", "instance_type": "t3.small", "cpu_millis": 2000, "memory_mib": 1536},
             {"name": "big", "instance_type": "m5.xlarge", "cpu_millis": 4000, "memory_mib": 15000,
              "hourly_cost": 0.192, "boot_s": 120}]
    tfvars = {"region": "eu-west-1", "subnet_id": "subnet-0123456789abcdef0",
              "api_allowed_cidrs": ["0.0.0.0/0"],
              "cumulus_source": "https://example.com/cumulus-0.1.0-py3-none-any.whl", "node_types": types,
              "cluster_name": "prod-1", "tags": {"team": "ops"}, "node_key_name": "ops", "min_nodes": 1}
    (tmp_path / "terraform.tfvars.json").write_text(json.dumps(tfvars))
    got = json.loads(_console("base64encode(jsonencode(local.bootstrap))", tmp_path))
    defaults = {"hourly_cost": 0, "boot_s": 90}
    assert got == bootstrap_document(cluster_name="prod-1", node_types=[{**defaults, **t} for t in types],
                                     tags={"team": "ops"}, node_key_name="ops", min_nodes=1)
