"""A deploy acting as an attacker would, through `cumulus up` and its build sandbox: a package whose
build backend is the attacker's code runs it only in a throw-away container (no network, no host
file, user nobody, no capabilities), where an endless loop, a memory hog, a disk filler, a fork
bomb and an oversized build each end at their bound as a 422 saying which; options that would read
the control plane's files are refused without running anything or echoing the file. Nothing is left
behind: no build container, no build folder, no file on the host."""

from __future__ import annotations

import json
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import RunningPlatform, docker_client, start_platform
from package_index import PackageIndex, sdist

pytestmark = [pytest.mark.adversarial, pytest.mark.docker]

TOKEN = secrets.token_hex(6)
HOST_MARKER = Path(tempfile.gettempdir()) / f"cumulus-host-marker-{TOKEN}"  # made by the test, on the host
PWNED = Path(tempfile.gettempdir()) / f"cumulus-pwned-{TOKEN}"  # what a build tries to write

SNOOP = f'''
import json, os, socket
seen = {{"uid": os.getuid(), "interfaces": sorted(os.listdir("/sys/class/net")),
        "routes": open("/proc/net/route").read().splitlines()[1:],
        "marker": os.path.exists({str(HOST_MARKER)!r}),
        "docker": [p for p in ("/var/run/docker.sock", "/run/docker.sock", "/run/cumulus-docker.sock")
                   if os.path.exists(p)],
        "env": sorted(os.environ), "env1": open("/proc/1/environ", "rb").read().decode("latin-1"),
        "cap_eff": [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0],
        "mounts": sorted(l.split()[1] for l in open("/proc/self/mounts"))}}
try:
    open({str(PWNED)!r}, "w").write("x")
    seen["wrote"] = "in its own /tmp"
except OSError as exc:
    seen["wrote"] = str(exc)
try:
    socket.create_connection(("127.0.0.1", int(open("PORT").read())), timeout=2).close()
    seen["index"] = "reached"
except OSError as exc:
    seen["index"] = type(exc).__name__
open("src/snoop.py", "w").write("SEEN = " + repr(seen) + "\\n")
'''

HOOKS = {
    "spin": "while True:\n    pass\n",
    "hog": "hog = []\nwhile True:\n    hog.append(bytearray(64 * 1024 * 1024))\n",
    "filler": "with open('/work/tmp/fill', 'wb') as f:\n    while True:\n        f.write(b'x' * (1 << 20))\n",
    "bloat": "import os\nopen('src/blob.bin', 'wb').write(os.urandom(18 * 1024 * 1024))\n",
    # Each child becomes a small `sleep` (holding none of pip's pipes), so the pids limit, not memory
    # or the timeout, is what stops it.
    "forker": "import os\nwhile True:\n    if os.fork() == 0:\n        os.closerange(0, 1024)\n"
              "        os.execv('/bin/sleep', ['sleep', '60'])\n",
}


@pytest.fixture(scope="module")
def hostile(package_index: PackageIndex, docker_engine: None,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """A platform with small build limits, on an index that also serves the hostile packages."""
    snoop_name, snoop_data = sdist("snoop", "1.0", {"snoop.py": ""}, build_hook=SNOOP)
    # The sdist must know the index's port to try it; it is a file of the sdist (not code).
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(snoop_data)) as src, tarfile.open(fileobj=buf, mode="w:gz") as out:
        for member in src:
            out.addfile(member, src.extractfile(member))
        port = str(package_index.port).encode()
        info = tarfile.TarInfo("snoop-1.0/PORT")
        info.size = len(port)
        out.addfile(info, io.BytesIO(port))
    package_index.add("snoop", snoop_name, buf.getvalue())
    for name, hook in HOOKS.items():
        package_index.add(name, *sdist(name, "1.0", {f"{name}.py": ""}, build_hook=hook))
    HOST_MARKER.write_text("the host's")
    env = {**package_index.pip_env(), "CUMULUS_BUILD_TIMEOUT_S": "20", "CUMULUS_BUILD_MEMORY_MIB": "384",
           "CUMULUS_BUILD_DISK_MIB": "96", "CUMULUS_BUILD_OUTPUT_MIB": "16",
           "CUMULUS_BUILD_CPU_MILLIS": "1000"}
    plat = start_platform(tmp_path_factory.mktemp("hostile"), extra_env=env)
    try:
        yield plat
    finally:
        plat.stop()
        HOST_MARKER.unlink(missing_ok=True)


def _left_behind(platform: RunningPlatform) -> list[str]:
    found = [f"container {c['Id'][:12]}" for c in docker_client().api.containers(
        all=True, filters={"label": "io.cumulus.role=build"})]
    found += [f"folder {p}" for p in (platform.data_dir / "build").glob("*-*")]
    if PWNED.exists():
        found.append(f"host file {PWNED}")
    return found


def _deploy(platform: RunningPlatform, requirements: str,
            files: dict[str, str] | None = None) -> dict[str, str]:
    resp = platform.deploy("hostile", {"main.py": "def handler(e, c):\n    return 1\n",
                                       "requirements.txt": requirements, **(files or {})})
    assert resp.status_code == 422, resp.text
    err: dict[str, str] = resp.json()["error"]
    assert err["type"] == "RequirementsInstallFailed"
    assert not _left_behind(platform), _left_behind(platform)
    return err


def test_a_build_backend_runs_only_in_the_sandbox(hostile: RunningPlatform,
                                                  package_index: PackageIndex) -> None:
    hostile.deploy_ok("snooper", {"main.py": "import snoop\n\ndef handler(e, c):\n    return snoop.SEEN\n",
                                  "requirements.txt": "snoop==1.0\n"})
    seen = hostile.invoke("snooper", {}).json()
    assert seen["uid"] == 65534 and seen["cap_eff"] == "0000000000000000"
    assert seen["interfaces"] == ["lo"] and seen["routes"] == []  # no network, so no metadata address
    assert seen["index"] == "ConnectionRefusedError"  # its own loopback: the index is out of reach
    assert seen["marker"] is False and seen["docker"] == []
    assert seen["wrote"] == "in its own /tmp" and not PWNED.exists()
    assert not [k for k in seen["env"] if k.startswith(("CUMULUS", "AWS", "DOCKER"))]
    assert "PIP_INDEX_URL" not in seen["env1"] and hostile.token not in json.dumps(seen)
    assert not any(m.startswith(("/work/in/", "/etc/pip", "/root")) for m in seen["mounts"])
    assert not _left_behind(hostile)


@pytest.mark.parametrize(("package", "said"), [
    ("spin", "timed out"),
    ("hog", "ran out of memory (384 MiB)"),
    ("filler", "ran out of disk (96 MiB)"),
    ("bloat", "output too large (over 16 MiB)"),
    ("forker", "Resource temporarily unavailable"),
])
def test_a_hostile_build_ends_at_its_bound(hostile: RunningPlatform, package: str, said: str) -> None:
    err = _deploy(hostile, f"{package}==1.0\n")
    message = err["message"]
    assert f"building {package}-1.0.tar.gz in the build sandbox" in message and said in message, message


def test_a_local_package_with_its_own_build_backend_is_refused_unrun(hostile: RunningPlatform) -> None:
    backend = f"def build_wheel(*a, **k):\n    open({str(PWNED)!r}, 'w').write('ran on the host')\n"
    err = _deploy(hostile, "./pkg\n", {
        "pkg/pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "b"\nbackend-path = ["."]\n',
        "pkg/b.py": backend})
    assert "line 1: a local path or file is refused" in err["message"]
    assert not PWNED.exists()


def test_a_requirements_file_naming_the_hosts_files_echoes_none_of_them(hostile: RunningPlatform) -> None:
    for text in ("-r /etc/passwd\n", "-c /etc/shadow\n", "x @ file:///etc/passwd\n", "-e /etc\n"):
        err = _deploy(hostile, text)
        assert "root:" not in err["message"] and "is refused" in err["message"], err["message"]
