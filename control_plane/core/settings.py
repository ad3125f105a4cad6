"""Control plane settings: defaults embedded, overridden by `CUMULUS_*` env vars and CLI flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8080
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024


def default_data_dir() -> Path:
    """`$CUMULUS_DATA_DIR`, else `~/.cumulus`."""
    env = os.environ.get("CUMULUS_DATA_DIR")
    return Path(env) if env else Path.home() / ".cumulus"


def private_dir(path: Path) -> Path:
    """`path` as a directory; made readable by its owner only when it is made here."""
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
        path.chmod(0o700)
    return path


def default_docker_host() -> str:
    """`$DOCKER_HOST`, else the engine that `make up` starts, else Docker's default socket."""
    env = os.environ.get("DOCKER_HOST")
    if env:
        return env
    if Path("/run/cumulus-docker.sock").exists():
        return "unix:///run/cumulus-docker.sock"
    return "unix:///var/run/docker.sock"


class Settings(BaseSettings):
    """Everything the control plane is configured with."""

    model_config = SettingsConfigDict(env_prefix="CUMULUS_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db: str = ""
    cluster: str = "cumulus"
    provider: str = "local"
    min_nodes: int = 1
    max_nodes: int = 1
    # CPU is enforced per instance as a quota (a limit), and most instances idle most of the time,
    # so a local node offers its cores several times over to placement; memory is never overcommitted.
    cpu_overcommit: float = 4.0
    node_cpu_millis: int = 0
    node_memory_mib: int = 0
    docker_host: str = Field(default_factory=default_docker_host)
    image: str = ""
    public_url: str = ""
    reconcile_interval_s: float = 1.0
    heartbeat_interval_s: float = 2.0
    node_lost_after_s: float = 15.0
    queue_timeout_s: float = 30.0
    log_retention: int = 1000
    join_token_ttl_s: float = 1800.0
    # A provisioned node that has not joined by then is terminated (None: the provider's boot
    # deadline, from seconds for local agents to minutes for cloud and QEMU VMs).
    join_deadline_s: float | None = None
    orphan_grace_s: float = 300.0  # a cluster-tagged machine unknown for this long is terminated
    provision_wait_s: float = 600.0  # how long a call waits for a node being added
    high_watermark: float = 0.8
    low_watermark: float = 0.5
    watermark_window_s: float = 120.0
    scale_up_cooldown_s: float = 60.0
    scale_down_cooldown_s: float = 120.0
    failure_backoff_s: float = 30.0  # after a failed provision, doubling with each failure in a row
    # High availability: control planes sharing one database elect a leader for the fleet loops.
    lease_ttl_s: float = 10.0  # a dead leader is replaced after at most this long
    control_plane_id: str = ""  # default: made once and kept in the data directory
    nodes_dir: Path | None = None  # the local/qemu providers' node folders (default <data>/nodes)
    # The key that seals secrets in the database: given (e.g. from a KMS or secret store), or in a
    # file (default <data>/secret.key, made on first start). Control planes on one database share it.
    secret_key: str = ""
    secret_key_file: Path | None = None
    # The build sandbox that installs requirements (one throw-away container per step).
    build_memory_mib: int = Field(default=2048, ge=256)
    build_cpu_millis: int = Field(default=2000, ge=250)
    build_disk_mib: int = Field(default=1024, ge=64)  # its tmpfs: inputs, temporary files, output
    build_output_mib: int = Field(default=512, ge=16)  # the installed requirements at most
    build_timeout_s: float = Field(default=600.0, gt=0)
    build_concurrency: int = Field(default=2, ge=1)  # builds at once; more wait
    build_cache_mib: int = Field(default=4096, ge=0)  # dependency layers kept for reuse, by requirements
    # A function's network when its deploy does not say: "egress" (outbound only, as on Lambda) or
    # "none" (no network at all) for a cluster that allows functions no network by default.
    default_network: Literal["none", "egress"] = "egress"
    budget_check_interval_s: float = Field(default=10.0, gt=0)  # how often budgets are priced
    # The durable queue under async calls, schedules, the bus and workflows: the database (empty),
    # or a NATS JetStream server (`nats://host:port`) shared by the cluster's control planes.
    queue_url: str = Field(default="", pattern=r"^(nats://[^\s/]+)?$")
    job_lease_s: float = Field(default=60.0, ge=1)  # a worker holds a job this long between renewals
    async_concurrency: int = Field(default=32, ge=1)  # async calls run at once by each control plane
    async_retry_base_s: float = Field(default=60.0, ge=0)  # first back-off after a failure (Lambda: ~1 min)
    # Functions' mail (`context.services.mail`): the cluster's SMTP relay as a URL, empty for none
    # (sending then answers MailNotConfigured): smtp://[user:password@]host[:port] (STARTTLS when
    # the relay offers it) or smtps://... (TLS from the start); the sender of every message; the
    # messages a tenant may send a minute (its quota `mail_per_min` overrides it); the relay's time.
    mail_relay: str = Field(default="", pattern=r"^(smtps?://\S+)?$")
    mail_from: str = "cumulus@localhost"
    mail_per_min: int = Field(default=60, ge=0)
    mail_timeout_s: float = Field(default=20.0, gt=0)

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL: `--db`, else SQLite in the data directory."""
        return self.db or f"sqlite:///{self.data_dir / 'cumulus.db'}"

    @property
    def node_root(self) -> Path:
        """Where the local and qemu providers keep their node folders (share it between the
        control planes of one cluster on one machine)."""
        return self.nodes_dir or self.data_dir / "nodes"

    @property
    def url(self) -> str:
        """Where clients and node agents reach this control plane."""
        return self.public_url or f"http://{self.host}:{self.port}"


def version() -> str:
    """This Cumulus's version (the installed distribution's, else "unknown")."""
    import importlib.metadata

    try:
        return importlib.metadata.version("cumulus")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
