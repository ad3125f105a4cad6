"""The SSH key pair the host uses to log in to its VMs: ed25519, generated once into the cache folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class SshKey:
    """A private key file and its public half in `authorized_keys` form."""

    private_path: Path
    public_line: str


def ensure_ssh_key(cache_dir: Path) -> SshKey:
    """The key pair at `<cache>/vm/ssh/id_ed25519`, generated on first use (atomically, mode 0600)."""
    folder = cache_dir / "vm" / "ssh"
    private_path = folder / "id_ed25519"
    public_path = folder / "id_ed25519.pub"
    if not (private_path.exists() and public_path.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH)
        tmp = folder / f".id_ed25519.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private)
        public_tmp = folder / f".id_ed25519.pub.{os.getpid()}"
        public_tmp.write_bytes(public + b" cumulus-qemu\n")
        # The public half is written last: its presence means the pair is complete.
        if not private_path.exists():
            os.replace(tmp, private_path)
            os.replace(public_tmp, public_path)
        else:
            tmp.unlink()
            public_tmp.unlink()
    return SshKey(private_path=private_path, public_line=public_path.read_text().strip())
