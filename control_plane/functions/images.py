"""Functions as OCI images: a `docker save` archive uploaded at deploy, checked before it is stored.

An image function brings its own root filesystem and process, which talks the Lambda Runtime API
(served by the node agent: `node_agent/runtime_api.py`). The archive is read, never run, here: its
`manifest.json` must name exactly one image, whose config (read from the archive) must be for
linux/amd64 and say what to run, and every layer it names must be in the archive. What is stored is
a copy *without any name*: `docker load` applies the tags an archive carries, so a tag such as the
runtime image's would replace that image on every node. The copy has no `repositories` file, no
`RepoTags` in its manifest and no name annotations in its OCI index; nodes run the image by its id
(`sha256:<config digest>`), which no archive can take over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from control_plane.core import InvalidCode, PayloadTooLarge

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


NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


def _unnamed_index(data: bytes) -> bytes:
    """An OCI `index.json` without the annotations that name images."""
    index = _json(data, "OCI index")
    if not isinstance(index, dict):
        raise InvalidCode("the image archive's index.json is not a JSON object")
    for manifest in index.get("manifests") or []:
        if isinstance(manifest, dict) and isinstance(manifest.get("annotations"), dict):
            for key in NAME_ANNOTATIONS:
                manifest["annotations"].pop(key, None)
    return json.dumps(index).encode()


def store_unnamed(source: Path, dest: Path) -> None:
    """Copy a checked archive to `dest` without the names it carries (see the module), streamed."""
    with tarfile.open(source, mode="r:") as tar, \
            tarfile.open(dest, mode="w:", format=tarfile.PAX_FORMAT) as out:
        for info in tar:
            if info.name in ("repositories", "./repositories"):
                continue
            if info.name in ("manifest.json", "index.json"):
                fh = tar.extractfile(info)
                data = fh.read() if fh is not None else b""
                if info.name == "manifest.json":
                    entries = _json(data, "manifest")
                    for entry in entries:
                        entry["RepoTags"] = None
                    data = json.dumps(entries).encode()
                else:
                    data = _unnamed_index(data)
                copy = tarfile.TarInfo(info.name)
                copy.size, copy.mode, copy.mtime = len(data), 0o644, info.mtime
                out.addfile(copy, io.BytesIO(data))
            elif info.isfile():
                out.addfile(info, tar.extractfile(info))
            else:
                out.addfile(info)


def read_archive(path: Path) -> ImageArchive:
    """Check a `docker save` archive (InvalidCode, 400, saying what is wrong; over the bound, 413)."""
    if path.stat().st_size > MAX_ARCHIVE_BYTES:
        raise PayloadTooLarge(f"the image archive is over {MAX_ARCHIVE_BYTES // 2**20} MiB")
    with path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    names: set[str] = set()
    try:
        with tarfile.open(path, mode="r:") as tar:
            for members, info in enumerate(tar, 1):
                if members > MAX_MEMBERS:
                    raise InvalidCode(f"the image archive holds over {MAX_MEMBERS} entries")
                parts = PurePosixPath(info.name).parts
                if info.name.startswith("/") or ".." in parts:
                    raise InvalidCode(f"the image archive's entry {info.name[:200]!r} escapes its folder")
                if not (info.isfile() or info.isdir() or info.issym()):
                    raise InvalidCode(f"the image archive's entry {info.name[:200]!r} is not a file, folder "
                                      "or link")
                if info.isfile():
                    names.add(info.name)
            manifest = _json(_member(tar, "manifest.json", MAX_MANIFEST_BYTES, "manifest"), "manifest")
            if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
                raise InvalidCode("the image archive must hold exactly one image (docker save of one image)")
            entry = manifest[0]
            config_name = str(entry.get("Config", ""))
            config_bytes = _member(tar, config_name, MAX_CONFIG_BYTES, "image config")
            layers = entry.get("Layers")
            if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
                raise InvalidCode("the image archive's manifest lists no layers")
            missing = [x for x in layers if x not in names]
            if missing:
                raise InvalidCode(f"the image archive lacks the layer {missing[0][:200]} that its manifest "
                                  "names")
            if "index.json" in names:
                _unnamed_index(_member(tar, "index.json", MAX_MANIFEST_BYTES, "OCI index"))
    except tarfile.TarError as exc:
        raise InvalidCode(f"the image is not a tar archive (docker save IMAGE -o FILE.tar): {exc}") from None
    config = _json(config_bytes, "image config")
    run = config.get("config") if isinstance(config, dict) else None
    if not isinstance(config, dict) or not isinstance(run or {}, dict):
        raise InvalidCode("the image archive's config is not an image config (a JSON object)")
    arch, os_name = config.get("architecture"), config.get("os")
    if os_name != "linux" or arch not in ("amd64", "x86_64"):
        raise InvalidCode(f"the image is for {os_name}/{arch}; nodes run linux/amd64")
    run = run or {}
    entrypoint, cmd = run.get("Entrypoint") or [], run.get("Cmd") or []
    if not isinstance(entrypoint, list) or not isinstance(cmd, list):
        raise InvalidCode("the image config's Entrypoint and Cmd must be lists")
    if not entrypoint and not cmd:
        raise InvalidCode("the image has neither ENTRYPOINT nor CMD: nothing to run")
    repo_tags = entry.get("RepoTags") or []
    tags = tuple(str(t) for t in repo_tags) if isinstance(repo_tags, list) else ()
    image_id = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    return ImageArchive(image_id=image_id, digest=digest, size=path.stat().st_size, tags=tags,
                        entrypoint=tuple(str(x) for x in entrypoint), cmd=tuple(str(x) for x in cmd))


def stored_archive(upload: Path, artifacts_dir: Path) -> ImageArchive:
    """Check `upload` and keep its unnamed copy in `artifacts_dir` as `<digest>.zip` (the name every
    artifact has); the result describes the copy, which is what nodes load."""
    found = read_archive(upload)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(dir=artifacts_dir, suffix=".part")
    os.close(fd)
    try:
        store_unnamed(upload, Path(part))
        with open(part, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        size = Path(part).stat().st_size
        os.replace(part, artifacts_dir / f"{digest}.zip")
    finally:
        Path(part).unlink(missing_ok=True)
    return dataclasses.replace(found, digest=digest, size=size)
