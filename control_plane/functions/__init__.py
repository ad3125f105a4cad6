"""Functions and their versions: schemas (Base / Create / Public), code artifacts, deploy.

Requirements are installed in the build sandbox (`builder.py`, `sandbox.py`), never on the
control plane. Coming here: aliases, container-image functions, runtimes.
"""

from control_plane.functions.artifacts import MAX_UPLOAD_BYTES, build_artifact, remove_artifact, zip_folder
from control_plane.functions.builder import Builder, Progress
from control_plane.functions.deploy import FunctionService, parse_config, public_config
from control_plane.functions.images import MAX_ARCHIVE_BYTES, ImageArchive, read_archive
from control_plane.functions.progress import BUILD_ID, BuildProgress, BuildStatus
from control_plane.functions.requirements import Requirements, parse_requirements
from control_plane.functions.sandbox import (
    BuildLimits,
    BuildSandbox,
    DockerBuildSandbox,
    Interpreter,
    StepResult,
)
from control_plane.functions.schemas import (
    DeployedVersion,
    DeployResult,
    FunctionCreate,
    FunctionPublic,
)

__all__ = [
    "BUILD_ID",
    "MAX_ARCHIVE_BYTES",
    "MAX_UPLOAD_BYTES",
    "BuildLimits",
    "BuildProgress",
    "BuildSandbox",
    "BuildStatus",
    "Builder",
    "DeployResult",
    "DeployedVersion",
    "DockerBuildSandbox",
    "FunctionCreate",
    "FunctionPublic",
    "FunctionService",
    "ImageArchive",
    "Interpreter",
    "Progress",
    "Requirements",
    "StepResult",
    "build_artifact",
    "parse_config",
    "parse_requirements",
    "public_config",
    "read_archive",
    "remove_artifact",
    "zip_folder",
]
