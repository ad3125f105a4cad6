"""Deploy-time code checks (real zips, real temp folders)."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from control_plane.core import InvalidCode
from control_plane.functions import build_artifact, zip_folder


def _zip(files: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


MAIN = {"main.py": b"def handler(e, c):\n    return 1\n"}


def test_artifact_is_deterministic_and_named_by_its_hash(tmp_path: Path) -> None:
    d1, size1, layer = build_artifact(_zip(MAIN), "main.handler", tmp_path)
    d2, _, _ = build_artifact(_zip(MAIN), "main.handler", tmp_path)
    assert d1 == d2 and (tmp_path / f"{d1}.zip").stat().st_size == size1
    assert layer is None  # no requirements.txt: no dependency layer


def test_the_platforms_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidCode, match=r"\.cumulus"):
        build_artifact(_zip({**MAIN, ".cumulus/layers.json": b"{}"}), "main.handler", tmp_path)


@pytest.mark.parametrize("name", ["../x.py", "/etc/x.py", "a/../../x.py", "C:/x.py", "a\\..\\x.py"])
def test_paths_escaping_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidCode, match="escapes"):
        build_artifact(_zip({**MAIN, name: b"x"}), "main.handler", tmp_path)


def test_links_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidCode, match="links"):
        build_artifact(_zip(MAIN, links=("evil",)), "main.handler", tmp_path)


def test_not_a_zip(tmp_path: Path) -> None:
    with pytest.raises(InvalidCode, match="not a valid zip"):
        build_artifact(b"hello", "main.handler", tmp_path)


def test_handler_module_must_exist(tmp_path: Path) -> None:
    with pytest.raises(InvalidCode, match=r"pkg\.mod"):
        build_artifact(_zip(MAIN), "pkg.mod.handler", tmp_path)
    digest, _, _ = build_artifact(_zip({"pkg/__init__.py": b"", "pkg/mod.py": b"x=1"}), "pkg.mod.handler",
                                  tmp_path)
    assert digest


def test_zip_folder_skips_caches(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("x = 1\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "main.pyc").write_bytes(b"\0")
    names = zipfile.ZipFile(io.BytesIO(zip_folder(tmp_path))).namelist()
    assert names == ["main.py"]
