"""A `requirements.txt` is checked before anything installs it: only named requirements reach pip,
what would read a file or reach another index is refused naming the line and the option (never what
a file holds); the wheel tags pip is asked for match the runtime's Python; what a sandboxed build
returns is unpacked only as folders and regular files."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from package_index import sdist, wheel

from control_plane.core import RequirementsFailed
from control_plane.functions import Interpreter, parse_requirements
from control_plane.functions.builder import _build_requires, _check_built_wheel, _unpack


def test_named_requirements_with_markers_extras_and_options() -> None:
    reqs = parse_requirements(b"# pinned\nrequests[socks]>=2.0 ; python_version >= '3.8'  # why\n--pre\n"
                              b"numpy==2.1.0\n\n")
    assert reqs.lines == ('requests[socks]>=2.0; python_version >= "3.8"', "numpy==2.1.0")
    assert reqs.options == ("--pre",) and not reqs.hashed
    assert reqs.text() == '--pre\nrequests[socks]>=2.0; python_version >= "3.8"\nnumpy==2.1.0\n'


def test_hashes_and_continuations() -> None:
    digest = "a" * 64
    reqs = parse_requirements(b"numpy==2.1.0 \\\n    --hash=sha256:" + digest.encode()
                              + b"\nsix==1 --hash sha256:" + digest.encode() + b"\n")
    assert reqs.lines == (f"numpy==2.1.0 --hash=sha256:{digest}", f"six==1 --hash=sha256:{digest}")
    assert reqs.hashed


@pytest.mark.parametrize(("text", "said"), [
    ("-r /etc/passwd", "-r reads another file"),
    ("--requirement=/etc/shadow", "--requirement reads another file"),
    ("-c /etc/passwd", "-c reads a constraints file"),
    ("-e .", "-e installs a local or VCS project"),
    ("./pkg", "a local path or file is refused"),
    ("/etc/passwd", "a local path or file is refused"),
    ("pkg/", "a local path or file is refused"),
    ("tinylib-1.0-py3-none-any.whl", "a local path or file is refused"),
    ("file:///etc/passwd", "a file: URL is refused"),
    ("pkg @ file:///etc/passwd", "a URL or direct reference"),
    ("pkg @ https://169.254.169.254/latest/meta-data", "a URL or direct reference"),
    ("git+https://example.invalid/x.git", "a URL or direct reference"),
    ("https://example.invalid/x.whl", "a URL or direct reference"),
    ("-i http://127.0.0.1:1/simple", "-i is refused: packages come from the package index the operator"),
    ("--extra-index-url http://x", "--extra-index-url is refused"),
    ("-f /etc", "-f is refused"),
    ("requests --index-url=http://x", "--index-url is refused"),
    ("--no-deps", "the option --no-deps is not supported"),
    ("--pre yes", "--pre takes no value"),
    ("requests --hash=md5:abc", "a --hash must be"),
    ("not a requirement !!", "not a requirement"),
])
def test_what_would_read_a_file_or_reach_elsewhere_is_refused(text: str, said: str) -> None:
    with pytest.raises(RequirementsFailed) as caught:
        parse_requirements(f"ok-package\n{text}\n".encode())
    message = str(caught.value)
    assert message.startswith("requirements.txt line 2: ") and said in message, message
    assert caught.value.status == 422 and caught.value.type == "RequirementsInstallFailed"


def test_a_refusal_never_holds_what_a_file_holds() -> None:
    passwd = Path("/etc/passwd").read_text().splitlines()[0]
    with pytest.raises(RequirementsFailed) as caught:
        parse_requirements(b"-r /etc/passwd\n")
    assert passwd not in str(caught.value) and "root:" not in str(caught.value)


@pytest.mark.parametrize(("text", "said"), [
    (b"x" * 70_000, "over 64 KiB"),
    (b"\xff\xfe", "not UTF-8"),
    (b"a\x00b", "NUL"),
    (b"a==1 --hash=sha256:" + b"a" * 64 + b"\nb==2\n", "pins hashes for some requirements but not all"),
    (b"".join(b"p%d\n" % i for i in range(501)), "over 500 requirements"),
])
def test_files_that_are_not_requirements_files(text: bytes, said: str) -> None:
    with pytest.raises(RequirementsFailed, match=said):
        parse_requirements(text)


def test_only_comments_is_nothing_to_install() -> None:
    assert parse_requirements(b"# nothing\n\n").lines == ()


def test_wheel_tags_are_the_runtimes_python_and_platform() -> None:
    interp = Interpreter(version=(3, 11), implementation="cpython", machine="x86_64", glibc=(2, 36))
    args = interp.pip_args()
    assert args[:3] == ["--only-binary=:all:", "--python-version=3.11", "--implementation=cp"]
    assert {"--abi=cp311", "--abi=abi3", "--abi=none"} <= set(args)
    platforms = [a.split("=", 1)[1] for a in args if a.startswith("--platform=")]
    assert platforms[0] == "manylinux_2_36_x86_64" and platforms[-1] == "linux_x86_64"
    assert {"manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux1_x86_64"} <= set(platforms)
    assert "manylinux_2_37_x86_64" not in platforms
    musl = Interpreter(version=(3, 13), implementation="cpython", machine="aarch64", glibc=None)
    assert musl.platforms() == ["linux_aarch64"]
    assert interp.describe() == "CPython 3.11 on linux x86_64 (glibc 2.36)"


def test_build_requirements_are_read_from_the_sdist_never_run(tmp_path: Path) -> None:
    name, data = sdist("srconly", "1.0", {"srconly.py": ""}, requires=("flit_core>=3",))
    (tmp_path / name).write_bytes(data)
    assert _build_requires(tmp_path / name) == ["flit_core>=3"]
    legacy = tmp_path / "legacy-1.0.tar.gz"
    with tarfile.open(legacy, "w:gz") as tar:
        info = tarfile.TarInfo("legacy-1.0/setup.py")
        tar.addfile(info, io.BytesIO())
    assert _build_requires(legacy) == ["setuptools>=40.8.0", "wheel"]
    url = tmp_path / "urlreq-1.0.tar.gz"
    with tarfile.open(url, "w:gz") as tar:
        text = b'[build-system]\nrequires = ["x @ file:///etc/passwd"]\n'
        info = tarfile.TarInfo("urlreq-1.0/pyproject.toml")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    with pytest.raises(RequirementsFailed, match="names a URL as a build requirement"):
        _build_requires(url)


def test_a_wheel_a_build_made_may_not_name_a_url(tmp_path: Path) -> None:
    (tmp_path / "evil-1.0.tar.gz").write_bytes(b"")
    name, data = wheel("evil", "1.0", {"evil.py": ""}, requires=("loot @ file:///etc/shadow",))
    (tmp_path / name).write_bytes(data)
    with pytest.raises(RequirementsFailed, match="depends on a URL"):
        _check_built_wheel(tmp_path / name, tmp_path / "evil-1.0.tar.gz")
    other, data = wheel("requests", "1.0", {"x.py": ""})
    (tmp_path / other).write_bytes(data)
    with pytest.raises(RequirementsFailed, match="a wheel of another package"):
        _check_built_wheel(tmp_path / other, tmp_path / "evil-1.0.tar.gz")
    fine, data = wheel("evil", "1.0", {"evil.py": ""}, requires=("requests>=2",))
    (tmp_path / fine).write_bytes(data)
    _check_built_wheel(tmp_path / fine, tmp_path / "evil-1.0.tar.gz")


def _tar(path: Path, members: list[tarfile.TarInfo]) -> None:
    with tarfile.open(path, "w") as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)


def test_the_output_of_a_build_is_folders_and_regular_files_only(tmp_path: Path) -> None:
    ok = tmp_path / "ok.tar"
    d, f = tarfile.TarInfo("out/deps/pkg"), tarfile.TarInfo("out/deps/pkg/__init__.py")
    d.type, f.size = tarfile.DIRTYPE, 3
    _tar(ok, [d, f])
    _unpack(ok, "out/deps", tmp_path / "deps")
    assert (tmp_path / "deps" / "pkg" / "__init__.py").read_bytes() == b"xxx"
    link = tarfile.TarInfo("out/deps/shadow")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    _tar(tmp_path / "link.tar", [link])
    with pytest.raises(RequirementsFailed, match="links are refused"):
        _unpack(tmp_path / "link.tar", "out/deps", tmp_path / "deps2")
    escape = tarfile.TarInfo("out/deps/../../../etc/cron.d/x")
    _tar(tmp_path / "escape.tar", [escape])
    with pytest.raises(RequirementsFailed, match="outside its folder"):
        _unpack(tmp_path / "escape.tar", "out/deps", tmp_path / "deps3")
    assert not (tmp_path / "deps2").exists() or not any((tmp_path / "deps2").iterdir())


def test_the_zipped_pip_runs_pip(tmp_path: Path) -> None:
    import subprocess
    import sys

    from control_plane.functions.sandbox import zipped_pip

    path = zipped_pip(tmp_path)
    assert zipfile.is_zipfile(path) and zipped_pip(tmp_path) == path  # made once
    out = subprocess.run([sys.executable, "-I", f"{path}/pip", "--version"], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.startswith("pip ")
