"""Secrets on disk: files only their owner may read, and the cluster's node secret."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from control_plane.store import Store


def write_secret(path: Path, value: str) -> None:
    """Write a secret file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    path.chmod(0o600)


def cluster_node_token(store: Store, legacy_path: Path) -> str:
    """The secret node agents and control planes share, one per cluster: kept in the database so
    every control plane on it accepts every agent (a token from an older data directory's
    `node.token` file is adopted, so running agents keep working)."""

    def make() -> str:
        if legacy_path.exists():
            return legacy_path.read_text().strip()
        return "cmln_" + secrets.token_urlsafe(32)

    return store.shared_secret("node_token", make)
