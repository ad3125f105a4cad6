"""Reading `terraform/aws` without Terraform: its `.tf` files through python-hcl2, and its user-data
template through a renderer that is exact for the template language subset the template uses.

The template keeps to plain `${name}` interpolation (plus the `$${` and `%%{` escapes), so rendering
it here gives the very bytes `templatefile` would; anything else in it is an error, not a guess.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "terraform" / "aws"
USER_DATA_TEMPLATE = MODULE / "templates" / "user-data.sh.tftpl"

# `${` and `%{` open an interpolation and a directive; doubling the first character escapes them.
_TEMPLATE_TOKEN = re.compile(r"\$\$\{|%%\{|\$\{([^}]*)\}|%\{")
_NAME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_-]*)\s*$")


class TemplateError(ValueError):
    """The template uses more of Terraform's template language than this renderer implements."""


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals quoted (`'"x"'`) and expressions as `'${...}'`."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value) if "\\" in value else value[1:-1]
    return value


def normalize(node: Any) -> Any:
    """hcl2's dict with literal strings unquoted, block markers dropped, label keys unquoted."""
    if isinstance(node, dict):
        return {_unquote(k): normalize(v) for k, v in node.items() if k != "__is_block__"}
    if isinstance(node, list):
        return [normalize(v) for v in node]
    return _unquote(node)


def load_file(path: Path) -> dict[str, Any]:
    """One `.tf` file, parsed and normalized."""
    import hcl2

    with path.open() as fh:
        return dict(normalize(hcl2.load(fh)))


def load_module(module: Path = MODULE) -> dict[str, list[Any]]:
    """All `.tf` files of a module, their top-level block lists concatenated by block type."""
    merged: dict[str, list[Any]] = {}
    for path in sorted(module.glob("*.tf")):
        for kind, blocks in load_file(path).items():
            merged.setdefault(kind, []).extend(blocks)
    return merged


def blocks(module: Mapping[str, list[Any]], kind: str) -> dict[str, Any]:
    """Blocks with one label (`variable`, `output`) by name."""
    out: dict[str, Any] = {}
    for entry in module.get(kind, []):
        out.update(entry)
    return out


def labelled(module: Mapping[str, list[Any]], kind: str, type_name: str) -> dict[str, Any]:
    """Blocks with two labels (`resource`, `data`) of one type, by name."""
    out: dict[str, Any] = {}
    for entry in module.get(kind, []):
        out.update(entry.get(type_name, {}))
    return out


def locals_of(module: Mapping[str, list[Any]]) -> dict[str, Any]:
    """Every `locals` block's values, merged."""
    out: dict[str, Any] = {}
    for entry in module.get("locals", []):
        out.update(entry)
    return out


def template_references(text: str) -> set[str]:
    """Names the template interpolates; raises `TemplateError` on directives or expressions."""
    names: set[str] = set()
    for match in _TEMPLATE_TOKEN.finditer(text):
        token = match.group(0)
        if token in ("$${", "%%{"):
            continue
        if token == "%{":
            raise TemplateError(f"template directive at offset {match.start()}: not supported here")
        name = _NAME.match(match.group(1))
        if name is None:
            raise TemplateError(f"template expression {token!r} is not a plain variable name")
        names.add(name.group(1))
    return names


def render_template(text: str, variables: Mapping[str, str]) -> str:
    """What Terraform's `templatefile` returns for `text` (plain interpolations only).

    Every referenced variable must be given, as `templatefile` requires.
    """
    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$${":
            return "${"
        if token == "%%{":
            return "%{"
        if token == "%{":
            raise TemplateError(f"template directive at offset {match.start()}: not supported here")
        name = _NAME.match(match.group(1))
        if name is None:
            raise TemplateError(f"template expression {token!r} is not a plain variable name")
        if name.group(1) not in variables:
            raise TemplateError(f"vars map does not contain key {name.group(1)!r}")
        return str(variables[name.group(1)])

    return _TEMPLATE_TOKEN.sub(replace, text)


def hcl_jsonencode(value: Any) -> str:
    """Terraform's `jsonencode`: compact, object keys sorted, `<`, `>`, `&` escaped as Go does."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def bootstrap_document(*, cluster_name: str = "cumulus", region: str = "eu-west-1",
                       subnet_id: str = "subnet-0123456789abcdef0",
                       node_image_id: str = "ami-0123456789abcdef0",
                       node_security_group_id: str = "sg-0123456789abcdef0",
                       node_types: list[dict[str, Any]] | None = None, min_nodes: int = 0, max_nodes: int = 4,
                       database_url: str = "", node_key_name: str | None = None,
                       tags: Mapping[str, str] | None = None,
                       cumulus_source: str = "https://example.com/cumulus-0.1.0-py3-none-any.whl",
                       pip_extra_args: list[str] | None = None, apt_packages: list[str] | None = None,
                       api_port: int = 8080, control_plane_url: str = "",
                       admin_token_parameter: str | None = None) -> dict[str, Any]:
    """`local.bootstrap` of main.tf for these variable values (the module's defaults otherwise).

    `test_module` checks that its keys are those of the HCL object, so the two cannot drift apart.
    """
    types = node_types if node_types is not None else [
        {"name": "small", "instance_type": "t3.small", "cpu_millis": 2000, "memory_mib": 1536,
         "hourly_cost": 0.0208, "boot_s": 90}]
    return {
        "config": {
            "cumulus": {"cluster": cluster_name, "provider": "aws", "min_nodes": min_nodes,
                        "max_nodes": max_nodes, "db": database_url},
            "node_types": [{k: t[k] for k in ("name", "cpu_millis", "memory_mib", "hourly_cost", "boot_s")}
                           for t in types],
            "provider": {"aws": {
                "region": region, "image_id": node_image_id, "subnet_id": subnet_id,
                "security_group_ids": [node_security_group_id], "key_name": node_key_name,
                "instance_types": {t["name"]: t["instance_type"] for t in types},
                "extra_tags": dict(tags or {})}},
        },
        "cumulus_source": cumulus_source,
        "pip_extra_args": list(pip_extra_args or []),
        "apt_packages": list(apt_packages if apt_packages is not None
                             else ["ca-certificates", "python3-venv", "docker.io", "mmdebstrap", "iptables",
                                   "busybox-static", "git"]),
        "api_port": api_port,
        "region": region,
        "control_plane_url": control_plane_url,
        "admin_token_parameter": (f"/cumulus/{cluster_name}/admin-token" if admin_token_parameter is None
                                  else admin_token_parameter),
    }


def render_user_data(bootstrap: Mapping[str, Any]) -> str:
    """The user data `aws_instance.control_plane` gets for `local.bootstrap == bootstrap`."""
    return render_template(USER_DATA_TEMPLATE.read_text(), {"bootstrap_json": hcl_jsonencode(bootstrap)})
