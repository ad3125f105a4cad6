"""`GuestSoftware`: what a qemu node runs that this room does not make itself.

The function runtime image and the node agent belong to `node_agent`, which `provisioners` never
imports (the two rooms stand side by side on `placement`). The composition root, which sees both,
hands the qemu provider this description instead: the image to bake into every VM disk, the agent
package to install in every VM, and where Debian's packages come from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GuestSoftware:
    """The software of a qemu node (see the module docstring)."""

    runtime_image: str  # the function runtime image's tag, e.g. cumulus/python:3.11-<hash>
    runtime_recipe: str  # its recipe's hash: a new recipe makes a new VM image
    runtime_rootfs: Callable[[], Path]  # its rootfs tarball, built on first use
    agent_wheel: Callable[[], Path]  # the Cumulus wheel every VM installs (offline, without deps)
    agent_requirements: tuple[str, ...]  # the agent's dependencies, pinned: the image's venv holds them
    debian_mirror: Callable[[], str]  # the Debian mirror a VM rootfs is built from (asked only to build)
