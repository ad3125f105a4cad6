"""Functions and their versions: schemas (Base / Create / Public), code artifacts, deploy.

Coming here: aliases, container-image functions, runtimes.
"""

from control_plane.functions.artifacts import MAX_UPLOAD_BYTES, build_artifact, remove_artifact, zip_folder
from control_plane.functions.deploy import FunctionService, parse_config, public_config
from control_plane.functions.schemas import (
    DeployedVersion,
    DeployResult,
    FunctionCreate,
    FunctionPublic,
)

__all__ = [
    "MAX_UPLOAD_BYTES",
    "DeployResult",
    "DeployedVersion",
    "FunctionCreate",
    "FunctionPublic",
    "FunctionService",
    "build_artifact",
    "parse_config",
    "public_config",
    "remove_artifact",
    "zip_folder",
]
