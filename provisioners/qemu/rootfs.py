"""What the VM's root filesystem holds beyond its Debian packages: the kernel's modules, the SSH key,
static networking for QEMU's user-mode network, Docker tuned for a node agent, and the agent's unit.

Everything here edits a rootfs folder that `mmdebstrap` produced, before it becomes an ext4 image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from provisioners.base import ProviderError

AGENT_VENV = "/opt/cumulus"
AGENT_CONFIG = "/etc/cumulus/agent.json"
AGENT_ENV = "/etc/cumulus/agent.env"
AGENT_UNIT = "cumulus-agent.service"
GUEST_CACHE_DIR = "/var/cache/cumulus"  # the agent's CUMULUS_CACHE_DIR
GUEST_ADDRESS = "10.0.2.15"  # QEMU user-mode networking: guest 10.0.2.15, host 10.0.2.2, DNS 10.0.2.3

# Module folders kept in the guest: file systems (ext4, overlay), networking (bridge, netfilter,
# veth for Docker), virtio, and what those depend on. Sound, GPUs, wireless... are dropped (~300 MB).
KEPT_MODULE_DIRS = ("kernel/fs", "kernel/net", "kernel/lib", "kernel/crypto", "kernel/arch", "kernel/block",
                    "kernel/mm", "kernel/virt", "kernel/drivers/virtio", "kernel/drivers/block",
                    "kernel/drivers/char", "kernel/drivers/md")
DROPPED_MODULE_DIRS = ("kernel/net/wireless", "kernel/net/mac80211", "kernel/net/bluetooth",
                       "kernel/arch/x86/kvm")

# Units that only cost boot time in a headless VM reached over SSH.
MASKED_UNITS = ("getty@tty1.service", "serial-getty@ttyS0.service", "apt-daily.timer",
                "apt-daily-upgrade.timer", "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer",
                "systemd-networkd-wait-online.service", "systemd-timesyncd.service",
                "dpkg-db-backup.timer", "man-db.timer", "systemd-tmpfiles-clean.timer",
                "systemd-journal-flush.service", "systemd-update-utmp.service",
                "systemd-update-utmp-runlevel.service", "modprobe@dm_mod.service", "modprobe@fuse.service",
                "modprobe@loop.service", "modprobe@efi_pstore.service", "modprobe@configfs.service",
                "modprobe@drm.service", "sys-kernel-config.mount", "sys-kernel-debug.mount",
                "sys-kernel-tracing.mount", "sys-fs-fuse-connections.mount", "dev-hugepages.mount",
                "systemd-pstore.service", "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount")

AGENT_UNIT_TEXT = f"""[Unit]
Description=Cumulus node agent
After=docker.service
Requires=docker.service

[Service]
Environment=CUMULUS_CACHE_DIR={GUEST_CACHE_DIR}
EnvironmentFile=-{AGENT_ENV}
ExecStart={AGENT_VENV}/bin/python -m node_agent --config {AGENT_CONFIG}
Restart=always
RestartSec=2
KillSignal=SIGTERM
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
"""

NETWORK_TEXT = f"""[Match]
Name=e*

[Network]
Address={GUEST_ADDRESS}/24
Gateway=10.0.2.2
DNS=10.0.2.3
LinkLocalAddressing=no
IPv6AcceptRA=no
"""

# No default bridge (functions use `--network none` or the agent's own egress network); Docker's
# iptables on, so that egress network has its NAT (masquerade) and inter-container traffic off.
DOCKER_DAEMON_JSON = '{"bridge": "none", "ip6tables": false}\n'


def _write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _chroot(root: Path, *cmd: str) -> None:
    proc = subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ProviderError(f"chroot {' '.join(cmd)} failed: {proc.stderr[-2000:]}")


def install_kernel(root: Path, kernel_deb: Path, dest_dir: Path) -> str:
    """Unpack the kernel package into `root`, keep the modules a node needs, index them, and move
    `vmlinuz` to `dest_dir/vmlinuz`; returns the kernel release (e.g. `6.1.0-56-amd64`)."""
    # Unpacked aside, then moved: extracting over the rootfs would replace its merged-/usr symlinks.
    unpacked = kernel_deb.parent / "kernel-unpacked"
    proc = subprocess.run(["dpkg-deb", "-x", str(kernel_deb), str(unpacked)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise ProviderError(f"dpkg-deb -x {kernel_deb.name} failed: {proc.stderr[-1000:]}")
    releases = sorted(p.name for p in (unpacked / "lib" / "modules").iterdir())
    if len(releases) != 1:
        raise ProviderError(f"expected one kernel in {kernel_deb.name}, found {releases}")
    release = releases[0]
    moddir = root / "usr" / "lib" / "modules" / release
    moddir.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(unpacked / "lib" / "modules" / release), moddir)
    shutil.move(str(unpacked / "boot" / f"vmlinuz-{release}"), dest_dir / "vmlinuz")
    shutil.rmtree(unpacked)
    for sub in sorted((moddir / "kernel").rglob("*")):
        rel = sub.relative_to(moddir).as_posix()
        keep = any(rel == k or rel.startswith(k + "/") or k.startswith(rel + "/") for k in KEPT_MODULE_DIRS)
        # Network card drivers: only the top-level ones (virtio_net, veth, dummy...), no vendor trees.
        keep = keep or (rel.startswith("kernel/drivers/net/") and rel.count("/") == 3 and sub.is_file())
        keep = keep or rel in ("kernel/drivers", "kernel/drivers/net")
        keep = keep and not any(rel == d or rel.startswith(d + "/") for d in DROPPED_MODULE_DIRS)
        if not keep and sub.exists():
            if sub.is_dir():
                shutil.rmtree(sub)
            else:
                sub.unlink()
    _chroot(root, "/sbin/depmod", release)
    return release


def configure_guest(root: Path, *, authorized_key: str) -> str:
    """Write SSH access, networking, Docker and agent settings into `root`; returns the guest's SSH
    host key (`ssh-ed25519 AAAA...`) so the host can pin it."""
    _write(root, "/root/.ssh/authorized_keys", authorized_key.strip() + "\n", 0o600)
    (root / "root" / ".ssh").chmod(0o700)
    _write(root, "/etc/ssh/sshd_config.d/cumulus.conf",
           "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n")
    _write(root, "/etc/hostname", "cumulus-node\n")
    _write(root, "/etc/hosts", "127.0.0.1 localhost\n127.0.1.1 cumulus-node\n")
    # The initramfs mounts the root read-write: without an fstab line systemd waits for no device.
    _write(root, "/etc/fstab", "# / is mounted by the initramfs\n")
    _write(root, "/etc/systemd/network/10-qemu-user.network", NETWORK_TEXT)
    resolv = root / "etc" / "resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    _write(root, "/etc/resolv.conf", "nameserver 10.0.2.3\n")
    _write(root, "/etc/docker/daemon.json", DOCKER_DAEMON_JSON)
    _write(root, f"/etc/systemd/system/{AGENT_UNIT}", AGENT_UNIT_TEXT)
    (root / "etc" / "cumulus").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "cumulus").chmod(0o700)
    _write(root, "/etc/systemd/journald.conf.d/cumulus.conf", "[Journal]\nStorage=volatile\n")
    for unit in MASKED_UNITS:
        link = root / "etc" / "systemd" / "system" / unit
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink("/dev/null", link)
    wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ("systemd-networkd.service", "docker.service", "ssh.service"):
        link = wants / unit
        if not (link.is_symlink() or link.exists()):
            os.symlink(f"/lib/systemd/system/{unit}", link)
    host_key = (root / "etc" / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()
    if len(host_key) < 2:
        raise ProviderError("the rootfs has no SSH host key (openssh-server did not configure)")
    return f"{host_key[0]} {host_key[1]}"


def _mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ProviderError(f"mount {' '.join(args)} failed: {proc.stderr.strip()}")


def bake_runtime_image(root: Path, tarball: Path, tag: str, *, timeout_s: float = 120.0) -> None:
    """Import the function runtime image into the rootfs's own Docker data folder, on the host.

    `docker import` inside the guest takes ~150 s under TCG (hashing and unpacking 200 MB in an
    emulated CPU); the guest's own dockerd, run here in a chroot, does it in ~3 s, and every VM
    then boots with the image already in its engine. The rootfs is bind-mounted onto itself because
    dockerd's unpacker remounts `/` in a private namespace and needs it to be a mount point.
    """
    import docker

    sock = root / "run" / "cumulus-bake.sock"
    _mount("--bind", str(root), str(root))
    daemon: subprocess.Popen[bytes] | None = None
    try:
        _mount("-t", "proc", "proc", str(root / "proc"))
        for fs in ("sys", "dev"):
            _mount("--rbind", f"/{fs}", str(root / fs))
            _mount("--make-rslave", str(root / fs))
        _mount("-t", "tmpfs", "tmpfs", str(root / "run"))
        with (root.parent / "bake-dockerd.log").open("wb") as logf:
            cmd = ["chroot", str(root), "/usr/sbin/dockerd", "--data-root", "/var/lib/docker",
                   "-H", "unix:///run/cumulus-bake.sock", "--exec-root", "/run/docker-exec",
                   "--pidfile", "/run/cumulus-bake.pid"]
            daemon = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while not sock.exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise ProviderError("the rootfs's dockerd did not start (see bake-dockerd.log)")
            time.sleep(0.1)
        client = docker.DockerClient(base_url=f"unix://{sock}", timeout=int(timeout_s))
        repo, _, version = tag.partition(":")
        try:
            client.api.import_image_from_file(str(tarball), repository=repo, tag=version)
        except docker.errors.DockerException as exc:
            raise ProviderError(f"importing {tag} into the rootfs failed: {exc}") from exc
        finally:
            client.close()
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        subprocess.run(["umount", "-R", str(root)], capture_output=True, check=False)
