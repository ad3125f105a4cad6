"""Node agent configuration: flags, `CUMULUS_AGENT_*` environment variables, or a JSON file."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_memory_mib() -> int:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return int(pages * 0.75) // (1024 * 1024)
    except (ValueError, OSError):
        return 4096


class AgentSettings(BaseSettings):
    """Everything a node agent needs to know about itself and its control plane."""

    model_config = SettingsConfigDict(env_prefix="CUMULUS_AGENT_", extra="ignore")

    node_id: str = ""
    join_token: str = Field(default="", description="single-use token to join (when node_id is empty)")
    provider_node_id: str = ""
    control_plane_url: str = "http://127.0.0.1:8080"
    token: str = Field(default="", description="with node_id and no join: the key callers must present "
                                               "(also read from token_file); a joined node keeps the "
                                               "credential its join gave it")
    token_file: Path | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = 8081
    advertise_url: str = ""
    data_dir: Path = Path("/var/lib/cumulus-agent")
    cpu_millis: int = Field(default_factory=lambda: (os.cpu_count() or 1) * 1000)
    memory_mib: int = Field(default_factory=default_memory_mib)
    image: str = ""
    docker_host: str = ""
    heartbeat_interval_s: float = 2.0
    start_timeout_s: float = 60.0
    # How often the agent removes containers of this node that belong to none of its instances.
    sweep_interval_s: float = 30.0
    node_type: str = "local"
    provider: str = "local"
    gate_binary: Path = Field(default=Path("/bin/busybox"), description="a static busybox (Debian's "
                              "busybox-static), mounted into image functions to hold their process until "
                              "the node is ready for it")
    egress_network: str = Field(default="cumulus-egress", description="the Docker network of functions "
                                "with egress (made on first use, inter-container traffic off; one the "
                                "operator made is used as is)")
    metering: bool = Field(default=True, description="record usage (off: nothing is metered or billed; "
                           "for a benchmark's baseline)")
    egress_deny: list[str] = Field(default_factory=list, description="more IPv4 networks functions with "
                                   "egress may not reach (the metadata range, this node, its control "
                                   "planes and agent ports always are)")

    def resolved_token(self) -> str:
        """The key of a node that does not join, from `token` or `token_file`."""
        if self.token:
            return self.token
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        raise ValueError("the node agent needs a token (CUMULUS_AGENT_TOKEN or token_file)")

    def url(self) -> str:
        """How the control plane reaches this agent."""
        return self.advertise_url or f"http://{self.listen_host}:{self.listen_port}"
