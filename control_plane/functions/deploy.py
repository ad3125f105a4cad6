"""Deploying, reading and deleting functions: the unit of work behind the function routes.

A deploy checks the settings, builds the artifact (code plus installed requirements), stores it in
the database (so every control plane can serve it to its nodes) and then records the version that
names it, in that order: a version never names code that is not stored.
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from control_plane.core import InvalidConfig, QuotaExceeded
from control_plane.functions.artifacts import build_artifact, remove_artifact
from control_plane.functions.builder import Builder, Progress
from control_plane.functions.images import stored_archive
from control_plane.functions.progress import BuildProgress
from control_plane.functions.schemas import DeployedVersion, FunctionCreate
from control_plane.identity import DEFAULT_TENANT, SecretBox
from control_plane.store import Function, Store

HIDDEN = "(hidden)"


def parse_config(raw: str) -> FunctionCreate:
    """A deploy's settings from their JSON; InvalidConfig (422) names every bad field, and an
    unknown one with the closest known name."""
    try:
        keys = json.loads(raw)
    except ValueError:
        keys = None  # not JSON: pydantic below says how
    if isinstance(keys, dict):
        known = list(FunctionCreate.model_fields)
        for key in keys:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known settings: {', '.join(known)}"
                raise InvalidConfig(f"invalid config: unknown setting {str(key)[:100]!r}{hint}",
                                    details=[{"loc": [str(key)[:100]], "msg": "unknown setting"}])
    try:
        return FunctionCreate.model_validate_json(raw)
    except ValidationError as exc:
        details = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        parts = [f"{'.'.join(str(x) for x in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()]
        raise InvalidConfig("invalid config: " + "; ".join(parts), details=details) from exc


class FunctionService:
    """Functions, their versions and their code artifacts (synchronous: callers use a thread). A
    version's `secret_env` is sealed before it is stored and opened only to run it."""

    def __init__(self, store: Store, artifacts_dir: Path, box: SecretBox,
                 builder: Builder | None = None, *, default_network: str = "egress",
                 prepare_runtime: Callable[[str, Progress | None], None] | None = None) -> None:
        self.store = store
        self.artifacts_dir = artifacts_dir
        self.box = box
        self.builder = builder
        self.default_network = default_network
        self.progress = BuildProgress()  # what each named deploy's build is doing
        # An image archive is up to 512 MiB, read whole to be stored: one such deploy at a time.
        self._image_slot = threading.BoundedSemaphore(1)
        # Makes a runtime's image ready for nodes to fetch (built from Debian's mirror on first use).
        self.prepare_runtime = prepare_runtime

    def deploy(self, config: FunctionCreate, upload: bytes, progress: Progress | None = None, *,
               tenant: str = DEFAULT_TENANT, max_functions: int | None = None) -> DeployedVersion:
        """Build and store the code (and its dependency layer), then record a new version of
        `config.name` (the function's key; a new function of `tenant`, within its quota of
        `max_functions`); `progress` hears what the build is doing."""
        self.check_function_quota(config.name, tenant, max_functions)
        config = self._with_network(config)
        if self.prepare_runtime is not None:
            self.prepare_runtime(config.runtime, progress)
        built = build_artifact(upload, config.handler, self.artifacts_dir, self.builder,
                               runtime=config.runtime, progress=progress)
        digest, size = built.digest, built.size
        stored = config.model_dump(mode="json")
        stored["secret_env"] = {k: self.box.seal(v) for k, v in config.secret_env.items()}
        # The artifacts are stored with the version, in its transaction: a delete of another
        # function that shared the layer cannot remove it in between.
        artifacts = {d: self._reader(d) for d in filter(None, (built.layer, built.digest))}
        row = self.store.add_version(config.name, stored, digest, size, built.layer, artifacts=artifacts,
                                     tenant=tenant, max_functions=max_functions)
        return DeployedVersion.of(row, self.box.open)

    def check_function_quota(self, key: str, tenant: str, max_functions: int | None) -> None:
        """QuotaExceeded (403) if `key` is a new function and `tenant` has its quota of functions
        (checked again when the version is recorded: two deploys may race)."""
        if max_functions is None or self.store.function_exists(key):
            return
        count = self.store.function_count(tenant)
        if count >= max_functions:
            raise QuotaExceeded(f"tenant {tenant} has {count} functions, its quota 'functions' is "
                                f"{max_functions}", quota="functions", status=403)

    def deploy_image(self, config: FunctionCreate, archive: Path | None, *, tenant: str = DEFAULT_TENANT,
                     max_functions: int | None = None) -> DeployedVersion:
        """Record a new version of an image function: its uploaded `docker save` archive checked and
        stored (nodes load it), or, with no archive, the image `config.image` the nodes already hold."""
        self.check_function_quota(config.name, tenant, max_functions)
        config = self._with_network(config)
        quota = {"tenant": tenant, "max_functions": max_functions}
        if archive is not None:
            if config.image is not None:
                raise InvalidConfig("an uploaded image archive names its image itself: leave `image` out")
            with self._image_slot:
                found = stored_archive(archive, self.artifacts_dir)
                return self._record(config.model_copy(update={"image": found.image_id}), found.digest,
                                    found.size, **quota)
        if config.image is None:
            raise InvalidConfig("an image function needs an image: upload its archive (docker save) or name "
                                "one the nodes hold in `image`")
        return self._record(config, "", 0, **quota)

    def _record(self, config: FunctionCreate, digest: str, size: int, **quota: Any) -> DeployedVersion:
        """Record an image function's version (with its archive's artifact, if any)."""
        stored = config.model_dump(mode="json")
        stored["secret_env"] = {k: self.box.seal(v) for k, v in config.secret_env.items()}
        row = self.store.add_version(config.name, stored, digest, size,
                                     artifacts={digest: self._reader(digest)} if digest else {}, **quota)
        return DeployedVersion.of(row, self.box.open)

    def _with_network(self, config: FunctionCreate) -> FunctionCreate:
        """The cluster's default network, resolved once at the deploy: the version keeps it."""
        if config.network is not None:
            return config
        return config.model_copy(update={"network": self.default_network})

    def _reader(self, digest: str) -> Callable[[], bytes]:
        return lambda: (self.artifacts_dir / f"{digest}.zip").read_bytes()

    def latest(self, name: str) -> tuple[Function, DeployedVersion]:
        """The function and its latest version (FunctionNotFound if unknown)."""
        fn, row = self.store.get_function(name)
        return fn, DeployedVersion.of(row, self.box.open)

    def latest_version(self, name: str) -> DeployedVersion:
        """The latest version of `name` (FunctionNotFound if unknown)."""
        return self.latest(name)[1]

    def all(self, tenant: str | None = None) -> list[tuple[Function, DeployedVersion]]:
        """Every function (of `tenant`, if given) with its latest version, by name."""
        return [(fn, DeployedVersion.of(row, self.box.open)) for fn, row in self.store.list_functions(tenant)]

    def delete(self, name: str) -> None:
        """Delete a function, its versions, logs and the code no other version uses."""
        for digest in self.store.delete_function(name):
            remove_artifact(self.artifacts_dir, digest)

    def artifact_path(self, digest: str) -> Path | None:
        """The local file of an artifact, fetched from the database when another control plane
        built it; None if no version has it."""
        path = self.artifacts_dir / f"{digest}.zip"
        if path.is_file():
            return path
        data = self.store.artifact(digest)
        if data is None:
            return None
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.artifacts_dir, prefix=f".{digest}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return path

    def marker(self) -> tuple[int, float]:
        """Changes whenever any function is deployed or deleted (by any control plane)."""
        return self.store.functions_marker()


def public_config(version: DeployedVersion, *, reveal_env: bool) -> dict[str, Any]:
    """A version's settings as the API shows them: `secret_env` by name only, `env` with its values
    to a principal that may read them."""
    shown = version.config.model_dump(mode="json")
    shown["secret_env"] = sorted(version.config.secret_env)
    if not reveal_env:
        shown["env"] = {k: HIDDEN for k in version.config.env}
    return shown
