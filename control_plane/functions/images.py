"""Functions as OCI images: a `docker save` archive uploaded at deploy, checked before it is stored.

An image function brings its own root filesystem and process, which talks the Lambda Runtime API
(served by the node agent: `node_agent/runtime_api.py`). The archive is read, never run, here: its
`manifest.json` must name exactly one image, whose config (read from the archive) must be for
linux/amd64 and say what to run; the image is then named by its id (`sha256:<config digest>`), so
a node that loads the archive runs exactly that image whatever tags it carries.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from control_plane.core import InvalidCode

# Nodes fetch an archive from any control plane, which keeps it in the database: bounded well under
# the databases' largest value (SQLite's is 1e9 bytes).
MAX_ARCHIVE_BYTES = 512 * 2**20
MAX_MANIFEST_BYTES = 1 << 20
MAX_CONFIG_BYTES = 4 << 20
MAX_MEMBERS = 100_000
# A reference to an image already on the nodes' engines: [registry/]name[:tag][@digest], or an id.
IMAGE_REFERENCE = re.compile(r"^(sha256:[0-9a-f]{64}|[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[0-9]{1,5})?"
                             r"(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
                             r"(?:@sha256:[0-9a-f]{64})?)$")


@dataclass(frozen=True)
class ImageArchive:
    """What a checked archive holds: the image's id, the archive's digest and size, its command."""

    image_id: str  # "sha256:<hex>": how nodes run it
    digest: str  # sha256 of the archive file: the artifact nodes fetch
    size: int
    tags: tuple[str, ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]


def _member(tar: tarfile.TarFile, name: str, limit: int, what: str) -> bytes:
    try:
        info = tar.getmember(name)
    except KeyError:
        raise InvalidCode(f"the image archive has no {what} ({name})") from None
    if not info.isfile() or info.size > limit:
        raise InvalidCode(f"the image archive's {what} is not a file of at most {limit // 1024} KiB")
    fh = tar.extractfile(info)
    if fh is None:
        raise InvalidCode(f"the image archive's {what} cannot be read")
    return fh.read()


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise InvalidCode(f"the image archive's {what} is not JSON: {exc}") from None


def read_archive(path: Path) -> ImageArchive:
    """Check a `docker save` archive (InvalidCode, 400, saying what is wrong)."""
    if path.stat().st_size > MAX_ARCHIVE_BYTES:
        raise InvalidCode(f"the image archive is over {MAX_ARCHIVE_BYTES // 2**20} MiB")
    with path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    try:
        with tarfile.open(path, mode="r:") as tar:
            for members, info in enumerate(tar, 1):
                if members > MAX_MEMBERS:
                    raise InvalidCode(f"the image archive holds over {MAX_MEMBERS} entries")
                parts = PurePosixPath(info.name).parts
                if info.name.startswith("/") or ".." in parts:
                    raise InvalidCode(f"the image archive's entry {info.name[:200]!r} escapes its folder")
            manifest = _json(_member(tar, "manifest.json", MAX_MANIFEST_BYTES, "manifest"), "manifest")
            if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
                raise InvalidCode("the image archive must hold exactly one image (docker save of one image)")
            entry = manifest[0]
            config_name = str(entry.get("Config", ""))
            config_bytes = _member(tar, config_name, MAX_CONFIG_BYTES, "image config")
    except tarfile.TarError as exc:
        raise InvalidCode(f"the image is not a tar archive (docker save IMAGE -o FILE.tar): {exc}") from None
    config = _json(config_bytes, "image config")
    if not isinstance(config, dict):
        raise InvalidCode("the image archive's config is not a JSON object")
    arch, os_name = config.get("architecture"), config.get("os")
    if os_name != "linux" or arch not in ("amd64", "x86_64"):
        raise InvalidCode(f"the image is for {os_name}/{arch}; nodes run linux/amd64")
    run = config.get("config") or {}
    entrypoint = tuple(str(x) for x in run.get("Entrypoint") or ())
    cmd = tuple(str(x) for x in run.get("Cmd") or ())
    if not entrypoint and not cmd:
        raise InvalidCode("the image has neither ENTRYPOINT nor CMD: nothing to run")
    tags = tuple(str(t) for t in entry.get("RepoTags") or ())
    image_id = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    return ImageArchive(image_id=image_id, digest=digest, size=path.stat().st_size, tags=tags,
                        entrypoint=entrypoint, cmd=cmd)
