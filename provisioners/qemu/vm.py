"""Booting and stopping one QEMU VM: a qcow2 overlay on the read-only image, QEMU's `microvm`
machine, user-mode networking with the guest's SSH and agent ports forwarded to 127.0.0.1.

QEMU runs daemonized (`-daemonize -pidfile`): its start-up errors (a forwarded port taken, a bad
disk) come back synchronously as the launcher's exit status, and the VM outlives the process that
started it, so a restarted control plane finds its VMs again by pid and command line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioners.base import ProviderError
from provisioners.net import free_port
from provisioners.qemu.image import VmImage

log = logging.getLogger("cumulus.qemu")

QEMU = "qemu-system-x86_64"
# Under TCG, microvm's default (no PIT) leaves Debian's kernel unable to calibrate its TSC: it hangs.
MACHINE = "microvm,pit=on"
KERNEL_CMDLINE = "console=ttyS0 root=/dev/vda rw quiet panic=-1 apparmor=0 mitigations=off"
START_ATTEMPTS = 3
_PROBE_LOCK = threading.Lock()  # a free port can be taken between our probe and QEMU's bind


@dataclass(frozen=True)
class VmShape:
    """How big a VM is."""

    memory_mib: int = 1024
    cpus: int = 1


@dataclass(frozen=True)
class RunningVm:
    """A started VM: its QEMU process and where its forwarded ports are on 127.0.0.1."""

    pid: int
    ssh_port: int
    agent_port: int  # host side of the forwarded agent port
    overlay: Path
    console_log: Path
    accel: str


def host_tsc_khz() -> int:
    """The host's TSC frequency in kHz (from /proc/cpuinfo), or 0 if unknown.

    Under TCG the guest reads the host's TSC, and Debian's kernel on `microvm` calibrates it against
    the emulated PIT, which fails now and then under load and leaves the guest hanging without a
    clock; `tsc_early_khz=` on the command line skips that calibration.
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return int(float(line.split(":")[1]) * 1000)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def kernel_cmdline(accel: str) -> str:
    """The guest kernel's command line for `accel`."""
    khz = host_tsc_khz() if accel == "tcg" else 0
    return KERNEL_CMDLINE + (f" tsc_early_khz={khz}" if khz else "")



def require_qemu() -> None:
    """Raise `ProviderError` unless QEMU and qemu-img are installed."""
    for tool, package in ((QEMU, "qemu-system-x86"), ("qemu-img", "qemu-utils")):
        if shutil.which(tool) is None:
            raise ProviderError(f"{tool} is not installed (apt-get install -y {package})")


def _probe_kvm(image: VmImage, timeout_s: float) -> bool:
    """Whether a kernel boots under KVM: it must reach its "no root disk" panic within `timeout_s`
    (under a broken or nested KVM it hangs instead, so a hang means no)."""
    cmd = [QEMU, "-M", MACHINE, "-enable-kvm", "-cpu", "host", "-m", "256", "-nodefaults",
           "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
           "-kernel", str(image.kernel), "-append", "console=ttyS0 panic=-1"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return False
    return b"Kernel panic" in proc.stdout


def detect_accel(image: VmImage, cache_dir: Path, *, timeout_s: float = 10.0) -> str:
    """"kvm" where hardware KVM is proven to boot our kernel, else "tcg" (software emulation).

    `CUMULUS_QEMU_ACCEL=tcg|kvm` decides without probing. The probe's answer is cached per host
    boot and kernel in `<cache>/vm/accel.json`.
    """
    forced = os.environ.get("CUMULUS_QEMU_ACCEL", "").strip().lower()
    if forced in ("tcg", "kvm"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    with _PROBE_LOCK:  # concurrent launches wait for one probe instead of each running their own
        return _cached_probe(image, cache_dir, timeout_s)


def _cached_probe(image: VmImage, cache_dir: Path, timeout_s: float) -> str:
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = ""
    key = hashlib.sha256(f"{boot_id}:{image.kernel_release}".encode()).hexdigest()[:16]
    cache = cache_dir / "vm" / "accel.json"
    try:
        known = json.loads(cache.read_text())
        if known.get("key") == key and known.get("accel") in ("tcg", "kvm"):
            return str(known["accel"])
    except (OSError, ValueError):
        pass
    accel = "kvm" if _probe_kvm(image, timeout_s) else "tcg"
    log.info("event=accel_probed accel=%s", accel)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "accel": accel}))
    return accel


def create_overlay(base: Path, overlay: Path) -> None:
    """A qcow2 overlay whose backing file is the read-only base disk."""
    proc = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base),
                           str(overlay)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ProviderError(f"qemu-img create failed: {proc.stderr.strip()}")


@dataclass(frozen=True)
class GuestForward:
    """A service on the host's loopback (`host_port`) that guests reach at a virtual address of
    QEMU's network (`address:port`, e.g. 10.0.2.100:80): QEMU hands each guest connection to
    `provisioners.qemu.forward`, which relays it."""

    address: str
    port: int
    host_port: int

    def netdev_option(self) -> str:
        """The `-netdev user` option (no commas: QEMU's option syntax splits on them)."""
        return (f"guestfwd=tcp:{self.address}:{self.port}-cmd:{sys.executable} "
                f"{Path(__file__).with_name('forward.py')} {self.host_port}")


def qemu_command(image: VmImage, workdir: Path, shape: VmShape, *, accel: str, ssh_port: int,
                 agent_host_port: int, agent_guest_port: int,
                 guest_forwards: Sequence[GuestForward] = ()) -> list[str]:
    """The QEMU command line of a node VM."""
    accel_args = ["-enable-kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg", "-cpu", "max"]
    forwards = ",".join([f"hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
                         f"hostfwd=tcp:127.0.0.1:{agent_host_port}-:{agent_guest_port}",
                         *(f.netdev_option() for f in guest_forwards)])
    return [QEMU, "-M", MACHINE, *accel_args, "-smp", str(shape.cpus), "-m", str(shape.memory_mib),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-serial", f"file:{workdir / 'console.log'}",
            "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", kernel_cmdline(accel),
            # The overlay is thrown away with the node: no need to flush it to the host's disk.
            "-drive", f"id=d0,file={workdir / 'disk.qcow2'},format=qcow2,if=none,cache=unsafe",
            "-device", "virtio-blk-device,drive=d0",
            "-netdev", f"user,id=n0,{forwards}", "-device", "virtio-net-device,netdev=n0",
            "-qmp", f"unix:{workdir / 'qmp.sock'},server=on,wait=off",
            "-daemonize", "-pidfile", str(workdir / "qemu.pid")]


def start_vm(image: VmImage, workdir: Path, shape: VmShape, *, accel: str,
             agent_guest_port: int, guest_forwards: Sequence[GuestForward] = ()) -> RunningVm:
    """Create the overlay and start QEMU in the background; returns once QEMU runs (not the guest)."""
    require_qemu()
    overlay = workdir / "disk.qcow2"
    if not overlay.exists():
        create_overlay(image.disk, overlay)
    problem = ""
    for _ in range(START_ATTEMPTS):
        ssh_port, agent_port = free_port(), free_port()
        cmd = qemu_command(image, workdir, shape, accel=accel, ssh_port=ssh_port, agent_host_port=agent_port,
                           agent_guest_port=agent_guest_port, guest_forwards=guest_forwards)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False,
                              stdin=subprocess.DEVNULL)
        if proc.returncode == 0:
            pid = int((workdir / "qemu.pid").read_text().strip())
            log.info("event=vm_started dir=%s pid=%d ssh_port=%d agent_port=%d accel=%s",
                     workdir, pid, ssh_port, agent_port, accel)
            return RunningVm(pid=pid, ssh_port=ssh_port, agent_port=agent_port, overlay=overlay,
                             console_log=workdir / "console.log", accel=accel)
        problem = proc.stderr.strip()
        if "forwarding" not in problem and "in use" not in problem:
            break
    raise ProviderError(f"QEMU did not start: {problem[-1000:]}")


def qemu_alive(pid: int, overlay: Path) -> bool:
    """Whether `pid` is a live (not zombie) QEMU running `overlay`: pids are reused, overlays are not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X") and str(overlay).encode() in cmdline


def stop_vm(pid: int, overlay: Path, *, timeout_s: float = 10.0) -> None:
    """Stop the VM's QEMU (SIGTERM, then SIGKILL after `timeout_s`); a missing process is success.

    The guest is not shut down cleanly: its disk is an overlay about to be deleted.
    """
    if not qemu_alive(pid, overlay):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not qemu_alive(pid, overlay):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while qemu_alive(pid, overlay) and time.monotonic() < deadline:
        time.sleep(0.05)
    if qemu_alive(pid, overlay):
        raise ProviderError(f"QEMU pid {pid} did not stop")
