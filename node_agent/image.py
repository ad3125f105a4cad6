"""The function runtime image: Debian's Python, built from Debian's mirror with no registry.

No container registry is reachable from our machines, so the image is built locally with
`mmdebstrap` and `docker import`ed. The rootfs tarball is cached under a cache folder by the hash of
its recipe, so a machine (or CI run) builds it once and later runs only re-import it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("cumulus.image")

RUNTIME_REPOSITORY = "cumulus/python"


class ImageBuildError(RuntimeError):
    """The runtime image could not be built or loaded."""


# What manylinux wheels expect of the system beyond glibc (PEP 600's policy: libgcc_s, libstdc++;
# and what the common wheels load without bundling: libgomp for OpenMP, zlib) and nothing else:
# numpy, pandas, scipy, scikit-learn and Pillow bundle the rest in their `*.libs` folders.
WHEEL_LIBRARIES = ("libgcc-s1", "libstdc++6", "libgomp1", "zlib1g")


@dataclass(frozen=True)
class ImageRecipe:
    """What goes into a runtime image; its hash names the image and its cached rootfs."""

    suite: str = "bookworm"
    python: str = "3.11"  # the suite's python3, which names the image
    variant: str = "essential"
    packages: tuple[str, ...] = ("python3-minimal", "python3", "ca-certificates", *WHEEL_LIBRARIES)
    excludes: tuple[str, ...] = ("/usr/share/man/*", "/usr/share/locale/*", "/usr/share/doc/*",
                                 "/usr/share/info/*")

    def digest(self) -> str:
        """Content hash of the recipe (the mirror is not part of it: any mirror gives the same suite)."""
        blob = json.dumps([self.suite, self.variant, self.packages, self.excludes]).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def tag(self) -> str:
        """The image reference, e.g. `cumulus/python:3.11-<hash>`."""
        return f"{RUNTIME_REPOSITORY}:{self.python}-{self.digest()}"


# The runtimes a function can choose (`runtime`), as Lambda names them: Debian's Python of a suite.
RUNTIMES: dict[str, ImageRecipe] = {
    "python3.11": ImageRecipe(suite="bookworm", python="3.11"),
    "python3.13": ImageRecipe(suite="trixie", python="3.13"),
}
DEFAULT_RUNTIME = "python3.11"
DEFAULT_RECIPE = RUNTIMES[DEFAULT_RUNTIME]


def recipe_for(runtime: str) -> ImageRecipe:
    """The recipe of a runtime name (ImageBuildError naming the known ones otherwise)."""
    try:
        return RUNTIMES[runtime]
    except KeyError:
        raise ImageBuildError(f"unknown runtime {runtime[:40]!r}; known: {', '.join(RUNTIMES)}") from None


def default_cache_dir() -> Path:
    """Where built artefacts are cached: $CUMULUS_CACHE_DIR, else ~/.cache/cumulus."""
    env = os.environ.get("CUMULUS_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "cumulus"


def debian_mirror() -> str:
    """The Debian mirror apt already uses on this machine (never hard-coded)."""
    env = os.environ.get("CUMULUS_DEBIAN_MIRROR")
    if env:
        return env
    files = [*sorted(glob.glob("/etc/apt/sources.list.d/*")), "/etc/apt/sources.list"]
    for path in files:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for match in re.finditer(r"^URIs:\s*(\S+)", text, re.M):
            if "security" not in match.group(1):
                return match.group(1)
        for match in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", text, re.M):
            if "security" not in match.group(1):
                return match.group(1)
    raise ImageBuildError("no Debian mirror found in /etc/apt; set CUMULUS_DEBIAN_MIRROR")


def build_rootfs(recipe: ImageRecipe, dest: Path) -> None:
    """Run mmdebstrap to write the recipe's rootfs as a tarball at `dest` (atomically)."""
    if shutil.which("mmdebstrap") is None:
        raise ImageBuildError("mmdebstrap is not installed (apt-get install -y mmdebstrap)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # mmdebstrap picks the format from the extension and refuses an existing file.
    workdir = tempfile.mkdtemp(prefix="rootfs-", dir=dest.parent)
    tmp = os.path.join(workdir, "rootfs.tar")
    cmd = ["mmdebstrap", "--quiet", f"--variant={recipe.variant}",
           f"--include={','.join(recipe.packages)}"]
    cmd += [f"--dpkgopt=path-exclude={pattern}" for pattern in recipe.excludes]
    cmd += [recipe.suite, tmp, debian_mirror()]
    log.info("event=image_build_rootfs recipe=%s", recipe.digest())
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        if proc.returncode != 0:
            raise ImageBuildError(f"mmdebstrap failed ({proc.returncode}): {proc.stderr[-2000:]}")
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


_BUILD_LOCKS: dict[str, threading.Lock] = {}
_BUILD_LOCKS_GUARD = threading.Lock()


def _rootfs_path(recipe: ImageRecipe, cache_dir: Path | None) -> Path:
    return (cache_dir or default_cache_dir()) / "images" / f"rootfs-{recipe.digest()}.tar"


def rootfs_cached(recipe: ImageRecipe, cache_dir: Path | None = None) -> bool:
    """Whether the recipe's rootfs tarball is in the cache already."""
    return _rootfs_path(recipe, cache_dir).exists()


def runtime_rootfs(recipe: ImageRecipe = DEFAULT_RECIPE, cache_dir: Path | None = None) -> Path:
    """The recipe's rootfs tarball in the cache, built first if it is not there (the file a local
    node imports into Docker, a qemu VM image bakes in, and the control plane serves to nodes that
    lack a runtime). Threads asking for one recipe build it once."""
    cache = _rootfs_path(recipe, cache_dir)
    if cache.exists():
        return cache
    with _BUILD_LOCKS_GUARD:
        lock = _BUILD_LOCKS.setdefault(recipe.digest(), threading.Lock())
    with lock:
        if not cache.exists():
            build_rootfs(recipe, cache)
    return cache


def import_rootfs(client: Any, tarball: Path, tag: str) -> None:
    """`docker import` a rootfs tarball as `tag`."""
    import docker.errors

    repo, _, version = tag.partition(":")
    try:
        client.api.import_image_from_file(str(tarball), repository=repo, tag=version)
    except docker.errors.DockerException as exc:
        raise ImageBuildError(f"importing {tarball.name} as {tag} failed: {exc}") from exc
    log.info("event=image_imported tag=%s", tag)


def ensure_runtime_image(client: Any, recipe: ImageRecipe = DEFAULT_RECIPE,
                         cache_dir: Path | None = None) -> str:
    """Make sure the runtime image exists in this Docker engine; returns its tag.

    Order: already in the engine → import the cached rootfs → build the rootfs, cache it, import it.
    """
    import docker.errors

    tag = recipe.tag
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    import_rootfs(client, runtime_rootfs(recipe, cache_dir), tag)
    return tag


def ensure_image(client: Any, reference: str = "") -> str:
    """The runtime image to run functions from: `reference` (pulled from its registry when this
    engine lacks it), or, with no reference, the image built from Debian's mirror."""
    if not reference:
        return ensure_runtime_image(client)
    import docker.errors

    try:
        client.images.get(reference)
    except docker.errors.ImageNotFound:
        repo, _, tag = reference.rpartition(":") if ":" in reference.split("/")[-1] else (reference, "", "")
        try:
            client.images.pull(repo, tag=tag or "latest")
        except docker.errors.DockerException as exc:
            raise ImageBuildError(f"cannot pull the runtime image {reference}: {exc}") from exc
        log.info("event=image_pulled reference=%s", reference)
    return reference

