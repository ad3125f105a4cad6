"""The interface and the policy of `terraform/aws`, read with python-hcl2 (no terraform binary here)."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from terraform_module import (
    MODULE,
    USER_DATA_TEMPLATE,
    blocks,
    bootstrap_document,
    labelled,
    load_module,
    locals_of,
    template_references,
)

from control_plane.core import Settings
from provisioners.aws import EC2_ACTIONS, AwsProvider
from provisioners.base import TAG_CLUSTER

REQUIRED_VARIABLES = {"region", "subnet_id", "api_allowed_cidrs", "cumulus_source"}
OUTPUTS = {"api_url", "instance_id", "private_ip", "admin_token_parameter", "admin_token_command",
           "ssh_command", "node_security_group_id", "role_arn", "database_address", "terminate_nodes_command"}


@pytest.fixture(scope="module")
def module() -> dict[str, list[Any]]:
    """Every .tf file of the module, parsed."""
    return load_module()


def _expr_keys(expr: str) -> set[str]:
    """Attribute names of an HCL object expression as hcl2 prints it (`{a = x, b = y}`)."""
    return set(re.findall(r"[{,]\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", expr))


def test_variables_have_types_and_descriptions(module: dict[str, list[Any]]) -> None:
    variables = blocks(module, "variable")
    for name, body in variables.items():
        assert body.get("type"), f"variable {name} has no type"
        assert len(body.get("description", "")) > 10, f"variable {name} has no description"
    assert {n for n, b in variables.items() if "default" not in b} == REQUIRED_VARIABLES


def test_outputs_exist_with_descriptions(module: dict[str, list[Any]]) -> None:
    outputs = blocks(module, "output")
    assert set(outputs) == OUTPUTS
    for name, body in outputs.items():
        assert body.get("description") and body.get("value"), f"output {name} lacks a description or value"


def _policy_statements(module: dict[str, list[Any]]) -> list[dict[str, Any]]:
    doc = labelled(module, "data", "aws_iam_policy_document")["control_plane"]
    statements = list(doc.get("statement", []))
    for dynamic in doc.get("dynamic", []):
        statements.append(dynamic["statement"]["content"][0])
    return statements


def _conditions(statement: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    return {c["variable"]: (c["test"], c["values"]) for c in statement.get("condition", [])}


def test_policy_allows_exactly_the_providers_ec2_actions(module: dict[str, list[Any]]) -> None:
    actions = {a for s in _policy_statements(module) for a in s["actions"]}
    assert {a for a in actions if a.startswith("ec2:")} == set(EC2_ACTIONS)
    # Beyond EC2: only publishing the admin token. Nodes get no instance profile: no iam:PassRole.
    assert actions - set(EC2_ACTIONS) == {"ssm:PutParameter"}
    assert not any("*" in a for a in actions)


def test_policy_is_scoped_by_the_cluster_tag(module: dict[str, list[Any]]) -> None:
    cluster = ["${var.cluster_name}"]
    for s in _policy_statements(module):
        conditions = _conditions(s)
        resources = s["resources"] if isinstance(s["resources"], list) else [s["resources"]]
        taggable = any(r.endswith((":instance/*", ":volume/*")) for r in resources)
        if s["actions"] == ["ec2:DescribeInstances"]:
            assert resources == ["*"] and not conditions  # DescribeInstances takes no scoping
        elif s["actions"] == ["ec2:RunInstances"] and taggable:
            assert conditions == {f"aws:RequestTag/{TAG_CLUSTER}": ("StringEquals", cluster)}
        elif s["actions"] == ["ec2:RunInstances"]:
            # Image, subnet, security group, interfaces: carry no request tags, scoped by ARN instead.
            text = str(resources)
            assert "image/${local.node_image_id}" in text and "subnet/${var.subnet_id}" in text
            assert "security-group/${aws_security_group.node.id}" in text
        elif s["actions"] == ["ec2:CreateTags"]:
            assert conditions == {"ec2:CreateAction": ("StringEquals", ["RunInstances"]),
                                  f"aws:RequestTag/{TAG_CLUSTER}": ("StringEquals", cluster)}
        elif s["actions"] == ["ec2:TerminateInstances"]:
            assert conditions == {f"ec2:ResourceTag/{TAG_CLUSTER}": ("StringEquals", cluster)}
        elif s["actions"] == ["ssm:PutParameter"]:
            assert resources == ["arn:${local.partition}:ssm:${var.region}:${local.account_id}"
                                 ":parameter${statement.value}"]
        else:
            pytest.fail(f"unexpected statement {s}")


def test_control_plane_instance_is_not_one_of_its_nodes(module: dict[str, list[Any]]) -> None:
    """Tagged cumulus:cluster, it would list itself as an orphan node and terminate itself."""
    instance = labelled(module, "resource", "aws_instance")["control_plane"]
    assert TAG_CLUSTER not in instance["tags"]
    assert "cumulus:control-plane" in instance["tags"]
    assert instance["metadata_options"][0]["http_tokens"] == "required"
    assert "iam_instance_profile" in instance
    nodes_profile = str(locals_of(module)["cumulus_config"])
    assert "iam_instance_profile" not in nodes_profile  # hence no iam:PassRole


def test_debian_12_ami_lookup(module: dict[str, list[Any]]) -> None:
    ami = labelled(module, "data", "aws_ami")["debian12"]
    assert ami["owners"] == ["136693071363"]
    filters = {f["name"]: f["values"] for f in ami["filter"]}
    assert filters["name"] == ["debian-12-amd64-*"]


def test_security_groups_open_only_the_api_and_ssh(module: dict[str, list[Any]]) -> None:
    rules = labelled(module, "resource", "aws_vpc_security_group_ingress_rule")
    on_control_plane = {n: r for n, r in rules.items()
                        if r["security_group_id"] == "${aws_security_group.control_plane.id}"}
    assert set(on_control_plane) == {"api_from_clients", "api_from_nodes", "ssh"}
    for name in ("api_from_clients", "api_from_nodes"):
        assert on_control_plane[name]["from_port"] == on_control_plane[name]["to_port"] == "${var.api_port}"
    assert on_control_plane["api_from_clients"]["cidr_ipv4"] == "${each.value}"
    assert on_control_plane["api_from_clients"]["for_each"] == "${toset(var.api_allowed_cidrs)}"
    assert on_control_plane["ssh"]["from_port"] == on_control_plane["ssh"]["to_port"] == 22
    assert on_control_plane["ssh"]["for_each"] == "${toset(var.ssh_allowed_cidrs)}"
    agent = rules["agent_from_control_plane"]
    assert agent["referenced_security_group_id"] == "${aws_security_group.control_plane.id}"


def test_rds_is_optional_and_off_by_default(module: dict[str, list[Any]]) -> None:
    assert blocks(module, "variable")["enable_rds"]["default"] is False
    text = (MODULE / "rds.tf").read_text()
    resources = re.findall(r'^resource "([^"]+)" "([^"]+)"', text, re.M)
    assert len(resources) == 5
    for type_name, name in resources:
        body = labelled(module, "resource", type_name)[name]
        assert body["count"] == "${var.enable_rds ? 1 : 0}", f"{type_name}.{name} is not optional"
    assert "postgresql+psycopg://" in locals_of(module)["database_url"]


def test_user_data_template_uses_exactly_the_templatefile_arguments(module: dict[str, list[Any]]) -> None:
    calls = []
    for entry in module["resource"]:
        for type_name, by_name in entry.items():
            for name, body in by_name.items():
                for attr, value in body.items():
                    if isinstance(value, str) and "templatefile(" in value:
                        calls.append((f"{type_name}.{name}.{attr}", value))
    assert [c[0] for c in calls] == ["aws_instance.control_plane.user_data"]
    expr = calls[0][1]
    path = re.search(r'templatefile\("\$\{path\.module\}/([^"]+)"', expr)
    assert path is not None and MODULE / path.group(1) == USER_DATA_TEMPLATE
    arguments = _expr_keys(expr[expr.index("{", expr.index(",")):])
    assert arguments == template_references(USER_DATA_TEMPLATE.read_text()) == {"bootstrap_json"}


def test_bootstrap_document_is_the_modules(module: dict[str, list[Any]]) -> None:
    """The Python twin of `local.bootstrap` (used to render the template) has the HCL's shape, and
    the config it carries only uses keys Cumulus accepts."""
    local = locals_of(module)
    doc = bootstrap_document()
    assert set(local["bootstrap"]) == set(doc)
    config = local["cumulus_config"]
    assert set(config) == set(doc["config"])
    assert set(config["cumulus"]) == set(doc["config"]["cumulus"])
    assert set(config["cumulus"]) <= set(Settings.model_fields)
    node_type_keys = set(re.findall(r"(\w+) = t\.", config["node_types"]))
    assert node_type_keys == set(doc["config"]["node_types"][0])
    assert node_type_keys <= {"name", "cpu_millis", "memory_mib", "hourly_cost", "boot_s"}
    aws = config["provider"]["aws"]
    assert set(aws) == set(doc["config"]["provider"]["aws"])
    accepted = set(inspect.signature(AwsProvider.__init__).parameters) - {"self", "cluster", "bootstrap_for"}
    assert set(aws) <= accepted


def test_readme_documents_every_variable_and_output(module: dict[str, list[Any]]) -> None:
    readme = (MODULE.parent / "README.md").read_text()
    for name in [*blocks(module, "variable"), *blocks(module, "output")]:
        assert f"`{name}`" in readme, f"terraform/README.md does not mention `{name}`"


# -- with a terraform binary --------------------------------------------------------------------

TERRAFORM = shutil.which("terraform")
needs_terraform = pytest.mark.skipif(
    TERRAFORM is None, reason="no `terraform` binary on PATH (none is installable on these machines); "
                              "the python-hcl2 checks above stand in for it")


def _terraform(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    assert TERRAFORM is not None
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}  # no version check call
    return subprocess.run([TERRAFORM, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False, env=env)


@needs_terraform
def test_terraform_fmt() -> None:
    proc = _terraform("fmt", "-check", "-diff", "-recursive", cwd=MODULE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_terraform
def test_terraform_validate(tmp_path: Path) -> None:
    """`terraform validate` needs the providers' schemas. registry.terraform.io is not reachable
    from our machines (and tests reach no network), so providers come only from a local folder:
    `CUMULUS_TF_PLUGIN_DIR` (a `terraform providers mirror` output)."""
    plugin_dir = os.environ.get("CUMULUS_TF_PLUGIN_DIR", "")
    if not plugin_dir or not Path(plugin_dir).is_dir():
        pytest.skip("terraform validate needs the hashicorp/aws and hashicorp/random providers, which "
                    "only registry.terraform.io serves (unreachable here); set CUMULUS_TF_PLUGIN_DIR "
                    "to a local provider mirror to run it")
    work = tmp_path / "aws"
    shutil.copytree(MODULE, work)  # init writes .terraform/ next to the module
    init = _terraform("init", "-backend=false", "-input=false", "-no-color", f"-plugin-dir={plugin_dir}",
                      cwd=work)
    assert init.returncode == 0, init.stdout + init.stderr
    proc = _terraform("validate", "-no-color", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
