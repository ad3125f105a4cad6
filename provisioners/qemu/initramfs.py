"""A tiny initramfs for the VM: busybox-static, the few kernel modules needed to reach the root disk,
and an `/init` that loads them, mounts `/dev/vda` and hands over to the rootfs's init.

Debian's kernel builds virtio and ext4 as modules, so the kernel alone cannot mount its root disk.
initramfs-tools inside the rootfs would make a ~30 MB image that takes seconds to unpack under TCG;
this one is ~2 MB and its `/init` is a dozen lines we can read. The archive is written here in the
`newc` cpio format with fixed timestamps, so the same inputs give the same bytes.
"""

from __future__ import annotations

import gzip
import io
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from provisioners.base import ProviderError

# virtio_mmio: the devices of QEMU's `microvm` machine; virtio_pci: any PC machine type; ext4 needs
# crc32c through the crypto API (a soft dependency that modules.dep does not list).
BOOT_MODULES = ("virtio_mmio", "virtio_pci", "virtio_blk", "virtio_net", "crc32c_generic", "ext4")

INIT_SCRIPT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
for m in $(/bin/busybox cat /modules.order); do /bin/busybox insmod "/modules/$m" 2>/dev/null; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do /bin/busybox usleep 50000; i=$((i+1)); done
if ! /bin/busybox mount -t ext4 -o rw /dev/vda /newroot; then
  echo "cumulus-initramfs: cannot mount /dev/vda"; /bin/busybox sh
fi
/bin/busybox umount /proc /sys
/bin/busybox mount --move /dev /newroot/dev
exec /bin/busybox switch_root /newroot /sbin/init
"""


def module_load_order(modules_dep: str, wanted: Sequence[str]) -> list[str]:
    """Module files (relative to the modules folder) for `wanted`, dependencies first."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        path, _, rest = line.partition(":")
        if not path:
            continue
        deps[path] = rest.split()
        by_name[Path(path).name.split(".ko")[0].replace("-", "_")] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        found = by_name.get(name)
        if found is None:
            raise ProviderError(f"kernel module {name} is not in modules.dep")
        visit(found)
    return order


def _cpio_entry(out: io.BytesIO, ino: int, name: str, mode: int, data: bytes = b"",
                rdev: tuple[int, int] = (0, 0)) -> None:
    """One `newc` record (uid/gid 0, mtime 0)."""
    encoded = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
    out.write(b"070701" + b"".join(f"{v:08x}".encode() for v in fields))
    out.write(encoded)
    out.write(b"\0" * (-(110 + len(encoded)) % 4))
    out.write(data)
    out.write(b"\0" * (-len(data) % 4))


def cpio_newc(entries: Iterable[tuple[str, int, bytes]],
              devices: Iterable[tuple[str, int, tuple[int, int]]] = ()) -> bytes:
    """A `newc` archive of (name, mode, data) entries and (name, mode, (major, minor)) device nodes."""
    out = io.BytesIO()
    ino = 1
    for name, mode, data in entries:
        _cpio_entry(out, ino, name, mode, data)
        ino += 1
    for name, mode, rdev in devices:
        _cpio_entry(out, ino, name, mode, rdev=rdev)
        ino += 1
    _cpio_entry(out, ino, "TRAILER!!!", 0)
    return out.getvalue()


def build_initramfs(rootfs: Path, kernel_release: str, dest: Path,
                    busybox: Path = Path("/bin/busybox")) -> None:
    """Write a gzip'd initramfs for `kernel_release` (modules taken from `rootfs`) to `dest`."""
    if not busybox.exists() or shutil.which(str(busybox)) is None:
        raise ProviderError(f"{busybox} is missing (apt-get install -y busybox-static)")
    moddir = rootfs / "usr" / "lib" / "modules" / kernel_release
    order = module_load_order((moddir / "modules.dep").read_text(), BOOT_MODULES)
    dirs, files = 0o040755, 0o100644
    entries: list[tuple[str, int, bytes]] = [
        ("bin", dirs, b""), ("modules", dirs, b""), ("proc", dirs, b""), ("sys", dirs, b""),
        ("dev", dirs, b""), ("newroot", dirs, b""),
        ("bin/busybox", 0o100755, busybox.read_bytes()),
        ("init", 0o100755, INIT_SCRIPT.encode()),
        ("modules.order", files, "\n".join(Path(m).name for m in order).encode() + b"\n"),
    ]
    entries += [(f"modules/{Path(m).name}", files, (moddir / m).read_bytes()) for m in order]
    # The kernel opens /dev/console for /init before devtmpfs is mounted.
    console = [("dev/console", 0o020600, (5, 1))]
    dest.write_bytes(gzip.compress(cpio_newc(entries, console), compresslevel=6, mtime=0))
