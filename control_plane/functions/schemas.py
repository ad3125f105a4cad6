"""A function's shapes, layered on the table's base: what a deploy sends (`FunctionCreate`), what the
API shows (`FunctionPublic`, `DeployResult`), and what the gateway routes to (`DeployedVersion`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from control_plane.functions.images import IMAGE_REFERENCE
from control_plane.store import FunctionBase, FunctionVersion
from node_agent.image import DEFAULT_RUNTIME, RUNTIMES
from placement.brain import baseline_s, keep_alive_spec, parse_keep_alive
from placement.keepalive import KeepAlivePolicy

NAME_PATTERN = r"^([a-z][a-z0-9-]{0,62}/)?[a-z][a-z0-9-]{0,62}$"  # NAME, or TENANT/NAME
HANDLER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$"
MAX_HANDLER_LENGTH = 128
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
RESERVED_ENV_PREFIX = "CUMULUS_"
DEFAULT_KEEP_ALIVE = "adaptive"
MAX_ENV_BYTES = 32 * 1024  # all keys and values together, UTF-8 (Lambda allows 4 KiB)
DESTINATION_PATTERN = r"^(dlq|function:([a-z][a-z0-9-]{0,62}/)?[a-z][a-z0-9-]{0,62})$"


class FunctionCreate(FunctionBase):
    """What a user sets for a function (the `config` of a deploy); kept with every version."""

    name: str = Field(pattern=NAME_PATTERN, description=(
        "lowercase letters, digits and dashes; TENANT/NAME deploys into another tenant (bare: the caller's)"))
    handler: str = Field(default="main.handler", pattern=HANDLER_PATTERN, max_length=MAX_HANDLER_LENGTH,
                         description="module.function")
    memory_mb: int = Field(default=256, ge=64, le=16384, description="memory limit (MiB)")
    cpu_millis: int = Field(default=0, ge=0, le=64000,
                            description="CPU quota in millicores; 0 = proportional to memory")
    timeout_s: float = Field(default=30.0, gt=0, le=900, description="per-invocation timeout")
    concurrency: int = Field(default=1, ge=1, le=1000, description="in-flight requests per instance")
    min_instances: int = Field(default=0, ge=0, le=1000)
    max_instances: int = Field(default=10, ge=1, le=1000)
    keep_alive_s: float = Field(default=600.0, ge=0, le=86400, description="idle time before the last "
                                "instance stops (the keep-alive policy `fixed:<keep_alive_s>`)")
    keep_alive: str | None = Field(default=None, max_length=32, description="the keep-alive policy: "
                                   "'fixed:<seconds>' (the last instance stops after that idle time) or "
                                   "'adaptive' (pre-warm and keep-alive windows learned from the function's "
                                   "idle times, held to a 10-minute keep-alive's budget); default "
                                   "'adaptive', or 'fixed:<keep_alive_s>' when keep_alive_s is given")
    package_type: Literal["zip", "image"] = Field(default="zip", description="'zip': Python code run by "
                                                  "a runtime; 'image': an OCI image whose process talks the "
                                                  "Lambda Runtime API")
    image: str | None = Field(default=None, max_length=300, description="for an image function: an image "
                              "already on the nodes' engines (NAME[:TAG][@DIGEST] or sha256:ID); for an "
                              "uploaded archive, the platform names the image by its id")
    command: list[str] | None = Field(default=None, max_length=64, description="for an image function: "
                                      "what to run instead of the image's CMD (Lambda's ImageConfig.Command)")
    runtime: str = Field(default=DEFAULT_RUNTIME, description=f"the Python that runs the function: "
                         f"{', '.join(RUNTIMES)} (Debian's, of bookworm and trixie)")
    network: Literal["none", "egress"] | None = Field(
        default=None, description="'egress': outbound connections through the node (never inbound; the "
        "cloud metadata address, node agents and control planes stay unreachable); 'none': no network "
        "at all. Default: the cluster's `default_network` (egress unless the operator says otherwise)")
    env: dict[str, str] = Field(default_factory=dict, description="environment variables of every instance; "
                                f"names [A-Za-z_][A-Za-z0-9_]*, at most 128 characters, no NUL in "
                                f"values, {MAX_ENV_BYTES // 1024} KiB in all (with secret_env)")
    secret_env: dict[str, str] = Field(default_factory=dict, description="environment variables sealed "
                                       "in the database and never shown again (only their names)")
    max_retries: int = Field(default=2, ge=0, le=10, description="async calls: attempts after a failed "
                             "one (Lambda's default, 2)")
    max_event_age_s: float = Field(default=21600.0, ge=60, le=86400, description="async calls: how long "
                                   "an event may wait for its (next) attempt before it is dead-lettered")
    on_success: str | None = Field(default=None, pattern=DESTINATION_PATTERN, description="async calls: "
                                   "'function:NAME' gets a record of each success (Lambda's destination "
                                   "record)")
    on_failure: str | None = Field(default="dlq", pattern=DESTINATION_PATTERN, description="async calls: "
                                   "where a call out of retries goes: 'dlq' (the dead-letter queue, "
                                   "`cumulus dlq`), 'function:NAME' (a destination record), or null "
                                   "(dropped, its failure kept in `cumulus invocations`)")

    @field_validator("env", "secret_env")
    @classmethod
    def _env_keys(cls, env: dict[str, str]) -> dict[str, str]:
        size = 0
        for key, value in env.items():
            if not ENV_KEY.match(key):
                raise ValueError(f"invalid environment variable name {key[:130]!r} (letters, digits and _, "
                                 "at most 128 characters, not starting with a digit)")
            if key.startswith(RESERVED_ENV_PREFIX):
                raise ValueError(f"environment variables starting with {RESERVED_ENV_PREFIX} are reserved")
            if "\x00" in value:
                raise ValueError(f"the value of {key} holds a NUL character")
            size += len(key.encode()) + len(value.encode())
        if size > MAX_ENV_BYTES:
            raise ValueError(f"the environment takes {size} bytes; the limit is {MAX_ENV_BYTES}")
        return env

    @field_validator("image")
    @classmethod
    def _image(cls, image: str | None) -> str | None:
        if image is not None and not IMAGE_REFERENCE.match(image):
            raise ValueError(f"{image[:100]!r} is not an image reference (NAME[:TAG][@sha256:DIGEST] or "
                             "sha256:ID)")
        return image

    @field_validator("command")
    @classmethod
    def _command(cls, command: list[str] | None) -> list[str] | None:
        if command is not None and (not command or any(len(c) > 4096 or "\x00" in c for c in command)):
            raise ValueError("command is a non-empty list of arguments (each at most 4096 characters, "
                             "no NUL)")
        return command

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, runtime: str) -> str:
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime[:40]!r}; known: {', '.join(RUNTIMES)}")
        return runtime

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive(cls, spec: str | None) -> str | None:
        if spec is None:
            return None
        policy = parse_keep_alive(spec)
        if baseline_s(policy) > 86400:
            raise ValueError("a fixed keep-alive is at most 86400 seconds")
        return keep_alive_spec(policy)

    def keep_alive_policy(self) -> KeepAlivePolicy:
        """The keep-alive policy the function's brain decides with (`placement.brain`)."""
        return parse_keep_alive(self.keep_alive or DEFAULT_KEEP_ALIVE)  # set by the validator below

    @model_validator(mode="after")
    def _default_keep_alive(self) -> FunctionCreate:
        # Resolved once, at the deploy, and stored with the version: the default policy is the one
        # that beats a fixed 10-minute keep-alive on the trace samples (README); a function that
        # names its keep_alive_s keeps that fixed time.
        if self.keep_alive is None:
            explicit = "keep_alive_s" in self.model_fields_set
            self.keep_alive = f"fixed:{self.keep_alive_s:g}" if explicit else DEFAULT_KEEP_ALIVE
        return self

    @model_validator(mode="after")
    def _package(self) -> FunctionCreate:
        if self.package_type == "zip" and (self.image is not None or self.command is not None):
            raise ValueError("image and command are settings of image functions (package_type 'image')")
        return self

    @model_validator(mode="after")
    def _min_max(self) -> FunctionCreate:
        if self.min_instances > self.max_instances:
            raise ValueError(f"min_instances ({self.min_instances}) exceeds max_instances "
                             f"({self.max_instances})")
        both = set(self.env) & set(self.secret_env)
        if both:
            raise ValueError(f"{', '.join(sorted(both))} in both env and secret_env")
        size = sum(len(k.encode()) + len(v.encode()) for k, v in self.environment().items())
        if size > MAX_ENV_BYTES:
            raise ValueError(f"the environment takes {size} bytes; the limit is {MAX_ENV_BYTES}")
        return self

    def environment(self) -> dict[str, str]:
        """What an instance's environment holds of the function's own (secrets opened)."""
        return {**self.env, **self.secret_env}

    def effective_cpu_millis(self) -> int:
        """The CPU quota: as set, or one core per GiB of memory, at least a quarter core."""
        return self.cpu_millis or max(250, self.memory_mb * 1000 // 1024)


class FunctionPublic(FunctionBase):
    """A function as the API shows it: its latest version, settings and instances."""

    tenant: str
    version: int
    url: str
    config: dict[str, Any]
    code_digest: str
    code_size: int
    created_at: float
    updated_at: float
    instances: int = Field(default=0, description="instances ready to serve")
    starting: int = Field(default=0, description="instances being started")
    in_flight: int = Field(default=0, description="calls being served now")


class DeployResult(FunctionBase):
    """The answer to a deployment."""

    tenant: str
    version: int
    url: str


@dataclass(frozen=True, slots=True)
class DeployedVersion:
    """One immutable version as the gateway routes to it: no database row, just its facts."""

    function: str
    version: int
    code_digest: str
    code_size: int
    config: FunctionCreate
    created_at: float = 0.0
    layer_digest: str | None = None  # the dependency layer its requirements installed

    @classmethod
    def of(cls, row: FunctionVersion, open_secret: Callable[[str], str]) -> DeployedVersion:
        """The version a stored row describes, its sealed environment opened."""
        config = dict(row.config)
        config.setdefault("network", "none")  # versions stored before the setting had none
        config["secret_env"] = {k: open_secret(v) for k, v in config.get("secret_env", {}).items()}
        return cls(function=row.function, version=row.version, code_digest=row.code_digest,
                   code_size=row.code_size, config=FunctionCreate.model_validate(config),
                   created_at=row.created_at, layer_digest=row.layer_digest)
