"""What every room stands on: the clock, typed errors, settings and the config file, ids and
background tasks. No I/O but reading the config file; no database, no network."""

from control_plane.core.clock import Clock, ManualClock, SystemClock
from control_plane.core.config import ConfigError, FileConfig, load_config
from control_plane.core.errors import (
    OUTCOME_STATUS,
    BudgetExceeded,
    BuildUnavailable,
    ConflictError,
    CumulusError,
    Forbidden,
    FunctionNotFound,
    InstanceStartFailed,
    InvalidCode,
    InvalidConfig,
    InvalidEvent,
    NoCapacity,
    NodeUnavailable,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RequirementsFailed,
    Throttled,
    Unauthorized,
)
from control_plane.core.ids import id_prefix, new_id, request_id
from control_plane.core.settings import (
    DEFAULT_PORT,
    MAX_PAYLOAD_BYTES,
    Settings,
    default_data_dir,
    private_dir,
    version,
)
from control_plane.core.tasks import Background

__all__ = [
    "DEFAULT_PORT",
    "MAX_PAYLOAD_BYTES",
    "OUTCOME_STATUS",
    "Background",
    "BudgetExceeded",
    "BuildUnavailable",
    "Clock",
    "ConfigError",
    "ConflictError",
    "CumulusError",
    "FileConfig",
    "Forbidden",
    "FunctionNotFound",
    "InstanceStartFailed",
    "InvalidCode",
    "InvalidConfig",
    "InvalidEvent",
    "ManualClock",
    "NoCapacity",
    "NodeUnavailable",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RequirementsFailed",
    "Settings",
    "SystemClock",
    "Throttled",
    "Unauthorized",
    "default_data_dir",
    "id_prefix",
    "load_config",
    "new_id",
    "private_dir",
    "request_id",
    "version",
]
