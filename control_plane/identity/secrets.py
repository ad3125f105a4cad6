"""Secrets: files only their owner may read, and the box that encrypts what the database holds.

The box's key lives outside the database: `secret_key` (a setting, e.g. from a KMS or a secret
store), else the file `secret_key_file`, else `<data dir>/secret.key` (made on first start, 0600).
Control planes sharing a database must share the key; a control plane whose key is not the one the
database's secrets were sealed with refuses to start, saying so.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from control_plane.store import Store

SEALED = "sealed1:"  # what a sealed value starts with
KEY_CHECK = "key_check"


class SecretKeyError(Exception):
    """The secret key is missing or malformed, or the database's secrets were sealed with another."""


def write_secret(path: Path, value: str) -> None:
    """Write a secret file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    path.chmod(0o600)


class SecretBox:
    """Seals and opens secrets (Fernet: AES-128-CBC with HMAC-SHA256, from `cryptography`)."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def load(cls, *, key: str = "", key_file: Path | None = None, data_dir: Path) -> SecretBox:
        """The box of `key`, else of `key_file`, else of `<data_dir>/secret.key` (made if missing)."""
        if key:
            return cls._of(key, "the secret_key setting")
        path = key_file or data_dir / "secret.key"
        if not path.exists():
            if key_file is not None:
                raise SecretKeyError(f"the secret key file {path} does not exist")
            write_secret(path, Fernet.generate_key().decode())
        return cls._of(path.read_text(), f"the secret key file {path}")

    @classmethod
    def _of(cls, key: str, where: str) -> SecretBox:
        try:
            return cls(key.strip().encode())
        except ValueError:
            raise SecretKeyError(f"{where} is not a key: it must be 32 bytes in URL-safe base64 (make one "
                                 "with `python -c 'from cryptography.fernet import Fernet; "
                                 "print(Fernet.generate_key().decode())'`)") from None

    def seal(self, value: str) -> str:
        """`value` encrypted and authenticated, as text."""
        return SEALED + self._fernet.encrypt(value.encode()).decode()

    def open(self, sealed: str) -> str:
        """The value `seal` sealed (SecretKeyError if another key sealed it)."""
        if not sealed.startswith(SEALED):
            raise ValueError("not a sealed value")
        try:
            return self._fernet.decrypt(sealed[len(SEALED):].encode()).decode()
        except InvalidToken:
            raise SecretKeyError("a secret in the database was sealed with another key") from None

    def check(self, store: Store) -> None:
        """Make sure this box opens what the database holds (the first control plane seals a check
        value): SecretKeyError, with what to do, otherwise."""
        sealed = store.shared_secret(KEY_CHECK, lambda: self.seal("cumulus"))
        try:
            self.open(sealed)
        except SecretKeyError:
            raise SecretKeyError("this control plane's secret key is not the one this database's secrets "
                              "were sealed with: give it the cluster's key (the secret_key setting, or "
                              "secret_key_file pointing to the first control plane's secret.key)") from None

    def shared(self, store: Store, name: str, make: str) -> str:
        """The cluster's secret `name`, sealed in the database (`make` if this is the first ask)."""
        return self.open(store.shared_secret(name, lambda: self.seal(make)))
