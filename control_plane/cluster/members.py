"""This control plane's identity among the cluster's members."""

from __future__ import annotations

from pathlib import Path

from control_plane.core import new_id


def member_id(path: Path) -> str:
    """This control plane's id, made on first start and kept with its data (a restart is the
    same member, and adopts the instances it started)."""
    if path.exists():
        return path.read_text().strip()
    member = new_id("cp", 10)
    path.write_text(member + "\n")
    return member
