"""The optional config file (TOML): settings, node types and provider parameters in one place.

```toml
[cumulus]                 # any Settings field (flags and CUMULUS_* variables override them)
provider = "aws"
min_nodes = 0
max_nodes = 4

[[node_types]]
name = "small"
cpu_millis = 2000
memory_mib = 4096
hourly_cost = 0.0208
boot_s = 60

[provider.aws]            # keyword arguments of the provider's constructor
region = "eu-west-1"
image_id = "ami-0123456789abcdef0"
instance_types = { small = "t3.small" }

[billing]                 # the price sheet (see control_plane.metering.prices)
currency = "USD"
per_gb_second = 0.0000166667
per_million_requests = 0.20
per_keepalive_instance_hour = 0.0
cold_start = "invocation" # or "platform", or "burst" (with burst_lifetime_s = 60)
```
Credentials never go here: each SDK reads them from its usual places.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from placement import NodeType, Resources


class ConfigError(ValueError):
    """The config file is missing, unreadable or malformed."""


@dataclass(frozen=True)
class FileConfig:
    """What a config file holds."""

    settings: dict[str, Any] = field(default_factory=dict)
    node_types: tuple[NodeType, ...] = ()
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    billing: dict[str, Any] = field(default_factory=dict)  # the price sheet (`metering.PriceSheet`)


def load_config(path: Path | None) -> FileConfig:
    """Read and check a config file; no path gives an empty config."""
    if path is None:
        return FileConfig()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    unknown = set(data) - {"cumulus", "node_types", "provider", "billing"}
    if unknown:
        raise ConfigError(f"{path}: unknown sections {sorted(unknown)}")
    types = []
    for i, raw in enumerate(data.get("node_types", [])):
        try:
            extra = {k: v for k, v in raw.items()
                     if k not in ("name", "cpu_millis", "memory_mib", "hourly_cost", "boot_s")}
            capacity = Resources(int(raw["cpu_millis"]), int(raw["memory_mib"]))
            types.append(NodeType(name=str(raw["name"]), capacity=capacity,
                                  hourly_cost=float(raw.get("hourly_cost", 0.0)),
                                  boot_s=float(raw.get("boot_s", 0.0)), extra=extra))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: node_types[{i}] needs name, cpu_millis, memory_mib: {exc}") from exc
    providers = data.get("provider", {})
    if not isinstance(providers, dict) or not all(isinstance(v, dict) for v in providers.values()):
        raise ConfigError(f"{path}: [provider.NAME] sections must be tables")
    billing = data.get("billing", {})
    if not isinstance(billing, dict):
        raise ConfigError(f"{path}: [billing] must be a table")
    return FileConfig(dict(data.get("cumulus", {})), tuple(types), providers, dict(billing))
