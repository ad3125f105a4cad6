"""VM image cache retention: a build keeps itself and the most recently used other images, and
clears scratch folders of builds that died. (Building real images is in tests/vm.)"""

from __future__ import annotations

import os
import time
from pathlib import Path

from provisioners.qemu.image import STALE_BUILD_S, prune_images


def _image(images: Path, name: str, used_at: float | None) -> Path:
    folder = images / name
    folder.mkdir(parents=True)
    (folder / "image.json").write_text("{}")
    (folder / "rootfs.img").write_bytes(b"disk")
    (folder / "rootfs.img").chmod(0o444)
    if used_at is not None:
        (folder / "used").touch()
        os.utime(folder / "used", (used_at, used_at))
    else:
        os.utime(folder / "image.json", (0, 0))  # never used: as old as it gets
    return folder


def test_a_build_keeps_itself_and_the_most_recently_used_others(tmp_path: Path) -> None:
    now = time.time()
    new = _image(tmp_path, "new", None)
    recent = _image(tmp_path, "recent", now - 60)
    older = _image(tmp_path, "older", now - 3600)
    oldest = _image(tmp_path, "oldest", now - 86400)
    never = _image(tmp_path, "never", None)
    dropped = prune_images(tmp_path, new, keep_old=2, now=now)
    assert sorted(p.name for p in dropped) == ["never", "oldest"]
    assert all(p.exists() for p in (new, recent, older))
    assert not oldest.exists() and not never.exists()


def test_scratch_folders_of_dead_builds_go_once_stale(tmp_path: Path) -> None:
    now = time.time()
    keep = _image(tmp_path, "keep", now)
    dead = tmp_path / ".build-abc-1"
    (dead / "image").mkdir(parents=True)
    os.utime(dead, (now - STALE_BUILD_S - 1, now - STALE_BUILD_S - 1))
    fresh = tmp_path / ".build-abc-2"
    fresh.mkdir()
    assert prune_images(tmp_path, keep, now=now) == [dead]
    assert not dead.exists() and fresh.exists() and keep.exists()
