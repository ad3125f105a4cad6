"""The bootable VM image of a qemu node, built once per content hash and cached.

An image is a folder `<cache>/vm/images/<digest>/` holding `vmlinuz` (Debian's kernel, from
`apt-get download`), `initrd.img` (busybox + the virtio/ext4 modules, see `initramfs.py`),
`rootfs.img` (a raw ext4 disk: Debian 12 with systemd, openssh-server, docker.io and a venv at
`/opt/cumulus` holding the node agent's dependencies, installed offline from a wheelhouse) and
`image.json`. The function runtime image's rootfs tarball is baked in too, so a node needs no registry
and no network to start functions. VMs never write to `rootfs.img`: each boots a qcow2 overlay on it.

The digest covers everything that changes the bytes: packages, the resolved kernel version, the pinned
agent dependencies, the runtime image recipe, the SSH public key, the code of `rootfs.py` and
`initramfs.py`, and this module's format version.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from provisioners.base import ProviderError
from provisioners.qemu import rootfs
from provisioners.qemu.initramfs import build_initramfs
from provisioners.qemu.keys import SshKey, ensure_ssh_key
from provisioners.qemu.software import GuestSoftware

log = logging.getLogger("cumulus.qemu")

FORMAT_VERSION = 1
# iptables and busybox-static: a node enforces functions' egress rules and holds image functions'
# processes until it is ready for them (node_agent/egress.py, node_agent/runtime.py).
GUEST_PACKAGES = ("systemd-sysv", "udev", "kmod", "iproute2", "openssh-server", "python3", "python3-venv",
                  "docker.io", "ca-certificates", "procps", "netbase", "iptables", "busybox-static")
DISK_HEADROOM_MIB = 2048  # free space in the guest for containers, code and logs
KEEP_OLD_IMAGES = 2  # images of other recipes kept after a build (the most recently used ones)
STALE_BUILD_S = 86400.0  # a scratch folder this old is left by a build that died


@dataclass(frozen=True)
class VmImageRecipe:
    """What goes into a VM image; `digest()` names it."""

    suite: str
    packages: tuple[str, ...]
    kernel_package: str  # e.g. "linux-image-6.1.0-56-amd64=6.1.192-2"
    agent_requirements: tuple[str, ...]  # e.g. ("aiohttp==3.9.5", ...)
    runtime_digest: str
    ssh_public_key: str
    builder: str = ""  # hash of the code that writes the image's bytes (rootfs.py, initramfs.py)
    format_version: int = FORMAT_VERSION

    def digest(self) -> str:
        """Content hash of the recipe."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class VmImage:
    """A built image: the files QEMU boots and what is needed to log in."""

    digest: str
    kernel: Path
    initrd: Path
    disk: Path
    kernel_release: str
    host_key: str  # the guest's SSH host key, pinned by the host
    ssh_key: SshKey
    runtime_image: str  # the function runtime image's tag inside the guest


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=cwd)
    if proc.returncode != 0:
        raise ProviderError(f"{what} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")
    return proc.stdout


def resolve_kernel_package() -> str:
    """The kernel that `linux-image-amd64` points to in this machine's apt lists, as `name=version`."""
    if shutil.which("apt-cache") is None:
        raise ProviderError("apt-cache is missing: the qemu provider needs a Debian host")
    deps = _run(["apt-cache", "depends", "linux-image-amd64"], "apt-cache depends linux-image-amd64")
    match = re.search(r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)", deps)
    if match is None:
        raise ProviderError("no linux-image-amd64 in the apt lists; run `apt-get update`")
    name = match.group(1)
    policy = _run(["apt-cache", "policy", name], f"apt-cache policy {name}")
    version = re.search(r"Candidate:\s*(\S+)", policy)
    if version is None or version.group(1) == "(none)":
        raise ProviderError(f"{name} has no installable version; run `apt-get update`")
    return f"{name}={version.group(1)}"


def builder_digest() -> str:
    """Hash of the modules that decide what the rootfs and initramfs hold."""
    from provisioners.qemu import initramfs

    blob = b"".join(Path(m.__file__ or "").read_bytes() for m in (rootfs, initramfs))
    return hashlib.sha256(blob).hexdigest()[:16]


def default_recipe(cache_dir: Path, software: GuestSoftware) -> VmImageRecipe:
    """The recipe for this host: current kernel in apt, the agent's pinned dependencies and
    runtime image from `software`, our SSH key."""
    return VmImageRecipe(suite="bookworm", packages=GUEST_PACKAGES, kernel_package=resolve_kernel_package(),
                         agent_requirements=software.agent_requirements,
                         runtime_digest=software.runtime_recipe,
                         ssh_public_key=ensure_ssh_key(cache_dir).public_line, builder=builder_digest())


@contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """Serialize image builds across threads and processes sharing a cache folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load(image_dir: Path, cache_dir: Path) -> VmImage:
    meta = json.loads((image_dir / "image.json").read_text())
    return VmImage(digest=meta["digest"], kernel=image_dir / "vmlinuz", initrd=image_dir / "initrd.img",
                   disk=image_dir / "rootfs.img", kernel_release=meta["kernel_release"],
                   host_key=meta["host_key"], ssh_key=ensure_ssh_key(cache_dir),
                   runtime_image=meta["runtime_image"])


def ensure_vm_image(cache_dir: Path, software: GuestSoftware,
                    recipe: VmImageRecipe | None = None) -> VmImage:
    """The VM image for `recipe` (default: this host's), built now if it is not cached yet; a
    build prunes the cache down to this image and the `KEEP_OLD_IMAGES` most recently used others."""
    cache = cache_dir
    recipe = recipe or default_recipe(cache, software)
    digest = recipe.digest()
    image_dir = cache / "vm" / "images" / digest
    if not (image_dir / "image.json").exists():
        with _build_lock(cache / "vm" / "build.lock"):
            if not (image_dir / "image.json").exists():
                _build(recipe, software, image_dir)
                for dropped in prune_images(image_dir.parent, image_dir):
                    log.info("event=vm_image_pruned path=%s", dropped)
    (image_dir / "used").touch()  # its mtime: when this image was last chosen
    return _load(image_dir, cache)


def prune_images(images: Path, keep: Path, *, keep_old: int = KEEP_OLD_IMAGES,
                 now: float | None = None) -> list[Path]:
    """Remove cached images but `keep` and the `keep_old` most recently used others, and scratch
    folders of builds that died; returns what was removed. Call under the build lock. A VM still
    running from a removed image goes on: QEMU holds its base disk open."""
    now = time.time() if now is None else now

    def last_used(image_dir: Path) -> float:
        stamp = image_dir / "used" if (image_dir / "used").exists() else image_dir / "image.json"
        return stamp.stat().st_mtime

    built = [d for d in images.iterdir() if d != keep and (d / "image.json").exists()]
    built.sort(key=last_used, reverse=True)
    stale = [d for d in images.glob(".build-*") if now - d.stat().st_mtime > STALE_BUILD_S]
    dropped = built[keep_old:] + stale
    for path in dropped:
        shutil.rmtree(path, ignore_errors=True)
    return dropped


def _wheelhouse(recipe: VmImageRecipe, dest: Path) -> None:
    """Download wheels of the agent's dependencies for the guest's Python (Debian 12: CPython 3.11)."""
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
          "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
          "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
          "--platform", "linux_x86_64", "--dest", str(dest), *recipe.agent_requirements],
         "pip download of the agent's dependencies")


def _mmdebstrap(recipe: VmImageRecipe, root: Path, wheelhouse: Path, mirror: str) -> None:
    """Debian rootfs with the agent venv installed offline from `wheelhouse` (inside mmdebstrap's
    customize hook, where /proc and /dev are mounted in the chroot)."""
    if shutil.which("mmdebstrap") is None:
        raise ProviderError("mmdebstrap is not installed (apt-get install -y mmdebstrap)")
    pip = (f'chroot "$1" python3 -m venv {rootfs.AGENT_VENV} && '
           f'chroot "$1" {rootfs.AGENT_VENV}/bin/pip install --quiet --no-index --disable-pip-version-check '
           f'--find-links /tmp/wheelhouse {" ".join(recipe.agent_requirements)} && '
           'rm -rf "$1/tmp/wheelhouse"')
    cmd = ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(recipe.packages)}",
           "--aptopt=APT::Install-Recommends \"false\"",
           *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("man", "locale", "doc", "info")),
           "--dpkgopt=path-include=/usr/share/locale/locale.alias",
           f"--customize-hook=mkdir -p \"$1/tmp/wheelhouse\" && cp -a {wheelhouse}/. \"$1/tmp/wheelhouse/\"",
           f"--customize-hook={pip}",
           recipe.suite, str(root), mirror]
    _run(cmd, "mmdebstrap of the VM rootfs")


def _dir_mib(path: Path) -> int:
    out = _run(["du", "-sm", "--apparent-size", str(path)], "du")
    return int(out.split()[0])


def _build(recipe: VmImageRecipe, software: GuestSoftware, image_dir: Path) -> None:
    """Build the image into a scratch folder next to `image_dir`, then move it into place."""
    t0 = time.monotonic()
    log.info("event=vm_image_build_start digest=%s kernel=%s", recipe.digest(), recipe.kernel_package)
    runtime_tarball = software.runtime_rootfs()
    image_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".build-{recipe.digest()}-", dir=image_dir.parent))
    try:
        out = work / "image"
        out.mkdir()
        (work / "wheelhouse").mkdir()
        _wheelhouse(recipe, work / "wheelhouse")
        _run(["apt-get", "download", recipe.kernel_package], "apt-get download of the kernel", cwd=work)
        kernel_deb = next(work.glob("linux-image-*.deb"))
        root = work / "rootfs"
        _mmdebstrap(recipe, root, work / "wheelhouse", software.debian_mirror())
        t_rootfs = time.monotonic()
        release = rootfs.install_kernel(root, kernel_deb, out)
        build_initramfs(root, release, out / "initrd.img")
        host_key = rootfs.configure_guest(root, authorized_key=recipe.ssh_public_key)
        rootfs.bake_runtime_image(root, runtime_tarball, software.runtime_image)
        size_mib = _dir_mib(root) * 5 // 4 + DISK_HEADROOM_MIB
        _run(["mkfs.ext4", "-q", "-F", "-L", "cumulus-root", "-d", str(root), str(out / "rootfs.img"),
              f"{size_mib}M"], "mkfs.ext4 of the VM disk")
        (out / "rootfs.img").chmod(0o444)  # the base of every overlay: never written
        meta = {"digest": recipe.digest(), "kernel_release": release, "host_key": host_key,
                "runtime_image": software.runtime_image, "disk_mib": size_mib, "recipe": asdict(recipe),
                "built_at": time.time(), "build_s": round(time.monotonic() - t0, 1)}
        (out / "image.json").write_text(json.dumps(meta, indent=2))
        os.replace(out, image_dir)
        log.info("event=vm_image_built digest=%s rootfs_s=%.1f total_s=%.1f disk_mib=%d",
                 recipe.digest(), t_rootfs - t0, time.monotonic() - t0, size_mib)
    finally:
        shutil.rmtree(work, ignore_errors=True)
