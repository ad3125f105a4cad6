"""Deploy-time code handling: check the uploaded zip, install requirements, store the artifact.

The artifact is a deterministic zip of the user's code, named by its SHA-256; node agents fetch it
by digest. What `requirements.txt` installs (in the build sandbox: `builder.py`) is a second
artifact, the dependency layer, shared by every version with the same requirements and runtime; the
code names it in `.cumulus/layers.json` (so the code's digest covers it), and a node mounts it
read-only at `/opt/cumulus-deps` beside the code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from control_plane.core import BuildUnavailable, InvalidCode
from control_plane.functions.builder import Builder, Progress
from node_agent.image import DEFAULT_RUNTIME

LAYERS_FILE = ".cumulus/layers.json"  # {"deps": "<digest of the dependency layer>"}

MAX_UPLOAD_BYTES = 64 * 1024 * 1024
MAX_UNPACKED_BYTES = 256 * 1024 * 1024
MAX_FILES = 20_000


def _check_members(zf: zipfile.ZipFile) -> None:
    """Reject zips that escape their folder, hold links or devices, or unpack too large."""
    total = 0
    infos = zf.infolist()
    if len(infos) > MAX_FILES:
        raise InvalidCode(f"the zip holds {len(infos)} entries; the limit is {MAX_FILES}")
    for info in infos:
        name = info.filename
        path = PurePosixPath(name)
        if name.startswith(("/", "\\")) or ".." in path.parts or "\\" in name or ":" in path.parts[0]:
            raise InvalidCode(f"zip entry {name!r} escapes the function's folder")
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip does not say
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise InvalidCode(f"zip entry {name!r} is not a regular file or folder (links are refused)")
        total += info.file_size
        if total > MAX_UNPACKED_BYTES:
            raise InvalidCode(f"the code unpacks to more than {MAX_UNPACKED_BYTES // 2**20} MiB")


def _check_handler(root: Path, handler: str) -> None:
    module = handler.rpartition(".")[0]
    rel = Path(*module.split("."))
    if not ((root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()):
        raise InvalidCode(f"the handler's module {module!r} is not in the code "
                          f"(expected {rel}.py at the top of the zip)")


def _deterministic_zip(root: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fname in sorted(filenames):
                full = Path(dirpath) / fname
                info = zipfile.ZipInfo(str(full.relative_to(root)), date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, full.read_bytes())
    return buf.getvalue()


class Artifact(NamedTuple):
    """A deployed version's stored code: its digest and size, and its dependency layer's digest."""

    digest: str
    size: int
    layer: str | None = None


def _file_digest(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _store_file(artifacts_dir: Path, digest: str, write: Callable[[Path], None]) -> None:
    final = artifacts_dir / f"{digest}.zip"
    if final.exists():
        return
    fd, part = tempfile.mkstemp(dir=artifacts_dir, suffix=".part")
    os.close(fd)
    write(Path(part))
    os.replace(part, final)


def _copy(source: Path, dest: Path) -> None:
    shutil.copyfile(source, dest)


def _write(dest: Path, data: bytes) -> None:
    dest.write_bytes(data)


def build_artifact(upload: bytes, handler: str, artifacts_dir: Path, builder: Builder | None = None, *,
                   runtime: str = DEFAULT_RUNTIME, progress: Progress | None = None) -> Artifact:
    """Check and prepare uploaded code (its requirements installed by `builder`, in the build
    sandbox, for `runtime`); the code and its dependency layer are left in `artifacts_dir`."""
    if len(upload) > MAX_UPLOAD_BYTES:
        raise InvalidCode(f"the zip is over {MAX_UPLOAD_BYTES // 2**20} MiB")
    try:
        zf = zipfile.ZipFile(io.BytesIO(upload))
    except zipfile.BadZipFile as exc:
        raise InvalidCode(f"the code is not a valid zip file: {exc}") from exc
    work = builder.work_dir if builder is not None else None
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    with zf, tempfile.TemporaryDirectory(prefix="cumulus-deploy-", dir=work) as tmp:
        _check_members(zf)
        root = Path(tmp) / "code"
        try:
            zf.extractall(root)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise InvalidCode(f"the zip could not be unpacked: {exc}") from exc
        root.mkdir(exist_ok=True)
        _check_handler(root, handler)
        if (root / ".cumulus").exists():
            raise InvalidCode(".cumulus is the platform's folder in an artifact; the code may not hold it")
        layer_digest: str | None = None
        artifacts_dir.mkdir(parents=True, exist_ok=True)
        if (root / "requirements.txt").is_file():
            if builder is None:
                raise BuildUnavailable("this control plane has no build sandbox to install requirements.txt")
            layer = builder.install(root, runtime, progress)
            if layer is not None:
                layer_digest = _file_digest(layer)
                _store_file(artifacts_dir, layer_digest, lambda part: _copy(layer, part))
                (root / ".cumulus").mkdir()
                (root / LAYERS_FILE).write_text(json.dumps({"deps": layer_digest}))
        data = _deterministic_zip(root)
    digest = hashlib.sha256(data).hexdigest()
    _store_file(artifacts_dir, digest, lambda part: _write(part, data))
    return Artifact(digest, len(data), layer_digest)


def zip_folder(folder: Path) -> bytes:
    """Zip a function folder for upload (what `cumulus deploy DIR` sends)."""
    if not folder.is_dir():
        raise InvalidCode(f"{folder} is not a folder")
    skip = {"__pycache__", ".git", ".venv", ".cumulus"}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if d not in skip)
            for fname in sorted(filenames):
                full = Path(dirpath) / fname
                if full.is_file() and not full.is_symlink():
                    zf.write(full, str(full.relative_to(folder)))
    return buf.getvalue()


def remove_artifact(artifacts_dir: Path, digest: str) -> None:
    """Delete a stored artifact; missing is fine."""
    (artifacts_dir / f"{digest}.zip").unlink(missing_ok=True)
